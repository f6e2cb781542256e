"""A toy benchmark for the runner tests: CartPole with a tiny PPO budget (a run takes well under a second)."""

from creditlab.bench.suites import AgentConfig, Suite, TaskSpec

TOY_AGENT = AgentConfig("ppo", {"gamma": 0.99, "n_steps": 64, "batch_size": 64, "n_epochs": 1}, n_envs=2)


def toy_task(steps: int = 256, name: str = "toy", env_id: str = "CartPole-v1") -> TaskSpec:
    return TaskSpec(name, env_id, "gymnasium", steps, max(1, steps // 2), TOY_AGENT, eval_episodes=2)


def toy_suite(steps: int = 256, seeds=(0, 1), tasks=None) -> Suite:
    return Suite(
        "toy", "toy suite for tests", tasks=tasks or (toy_task(steps),), methods=("episodic", "dense"), seeds=seeds
    )
