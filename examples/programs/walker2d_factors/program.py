# creditlab program (factors: evaluation_func) -- written by hand (not by an LLM).
# Untrusted code: run it only through creditlab.programs (sandboxed worker process).
# Written in the style of a LaRe answer for Walker2d-v5 (observation semantics from the Gymnasium
# documentation, default options: the x position is excluded, 17 values): a few interpretable latent
# factors per step from (observation, action); a learned decoder combines them.
import numpy as np


def evaluation_func(observation, action):
    height = observation[:, 0:1]
    torso_angle = observation[:, 1:2]
    forward_velocity = observation[:, 8:9]
    upright = ((height > 0.8) & (height < 2.0) & (np.abs(torso_angle) < 1.0)).astype(np.float64)
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    vertical_speed = np.abs(observation[:, 9:10])
    return [forward_velocity, upright, effort, height, np.abs(torso_angle), vertical_speed]
