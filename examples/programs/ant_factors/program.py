# creditlab program (factors: evaluation_func) -- written by hand (not by an LLM).
# Untrusted code: run it only through creditlab.programs (sandboxed worker process).
# Written in the style of a LaRe answer for Ant-v5 (observation semantics from the Gymnasium
# documentation, default options: x and y positions excluded, contact forces included, 105 values):
# a few interpretable latent factors per step from (observation, action); a learned decoder combines them.
import numpy as np


def evaluation_func(observation, action):
    height = observation[:, 0:1]                      # z of the torso
    forward_velocity = observation[:, 13:14]          # torso velocity along x
    sideways_speed = np.abs(observation[:, 14:15])
    healthy = ((height >= 0.2) & (height <= 1.0)).astype(np.float64)
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    contact = np.sum(observation[:, 27:105] ** 2, axis=1, keepdims=True)   # external contact forces
    upright = observation[:, 1:2]                     # w of the torso orientation quaternion (1 = level)
    return [forward_velocity, healthy, effort, contact, sideways_speed, height, upright]
