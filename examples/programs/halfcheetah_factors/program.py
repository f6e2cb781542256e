# creditlab program (factors: evaluation_func) -- written by hand (not by an LLM).
# Untrusted code: run it only through creditlab.programs (sandboxed worker process).
# Written in the style of a LaRe answer for HalfCheetah-v5 (observation semantics from the Gymnasium
# documentation, default options: the x position is excluded, 17 values): a few interpretable latent
# factors per step from (observation, action); a learned decoder combines them.
import numpy as np


def evaluation_func(observation, action):
    forward_velocity = observation[:, 8:9]           # velocity of the front tip along x
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    body_pitch = np.abs(observation[:, 1:2])         # angle of the front tip (flipping over is bad)
    vertical_speed = np.abs(observation[:, 9:10])    # bouncing wastes energy
    pitch_rate = np.abs(observation[:, 10:11])
    return [forward_velocity, effort, body_pitch, vertical_speed, pitch_rate]
