# creditlab program (factors: evaluation_func) -- written by hand (not by an LLM).
# Untrusted code: run it only through creditlab.programs (sandboxed worker process).
# Written in the style of a LaRe answer for examples/programs/hopper.yaml: a few interpretable
# latent factors per step from (observation, action); a learned decoder combines them.
import numpy as np


def evaluation_func(observation, action):
    height = observation[:, 0:1]
    torso_angle = observation[:, 1:2]
    forward_velocity = observation[:, 5:6]
    vertical_speed = np.abs(observation[:, 6:7])
    torso_spin = np.abs(observation[:, 7:8])
    upright = ((height > 0.7) & (np.abs(torso_angle) < 0.2)).astype(np.float64)
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    return [forward_velocity, upright, effort, height, np.abs(torso_angle), vertical_speed, torso_spin]
