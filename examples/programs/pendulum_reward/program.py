# creditlab program (reward: compute_reward) -- written by hand (not by an LLM).
# Untrusted code: run it only through creditlab.programs (sandboxed worker process).
# Written in the style of a Eureka answer for examples/programs/pendulum.yaml: a total reward and
# its named components, each bounded transform with its own named temperature.
import numpy as np


def compute_reward(observation, action, next_observation):
    cos_angle = next_observation[:, 0]
    sin_angle = next_observation[:, 1]
    speed = next_observation[:, 2]
    angle = np.arctan2(sin_angle, cos_angle)
    angle_temperature = 0.5
    upright = np.exp(-np.abs(angle) / angle_temperature)
    speed_temperature = 4.0
    calm = np.exp(-np.abs(speed) / speed_temperature) * upright
    effort = -0.001 * np.sum(action ** 2, axis=1)
    reward = upright + 0.5 * calm + effort
    return reward, {"upright": upright, "calm": calm, "effort": effort}
