"""Generate examples/episodes.jsonl: a small, deterministic episodes file in creditlab's schema.

32 episodes = 8 prompts x 4 samples (group_id = prompt), 1-6 turns each, with a per-step process
score (`reward`), a critic value (`value`), two named outcome components (`outcome.correct`,
`outcome.format`, one of them occasionally null = "not applicable"), and a task id.

    python examples/make_episodes.py          # rewrites examples/episodes.jsonl
"""

import json
from pathlib import Path

import numpy as np


def main(path: Path = Path(__file__).with_name("episodes.jsonl"), seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for prompt in range(8):
        for sample in range(4):
            episode_id = f"p{prompt}-s{sample}"
            n = int(rng.integers(1, 7))
            correct = float(rng.uniform() < 0.5)
            fmt = None if rng.uniform() < 0.1 else float(rng.uniform() < 0.8)
            for t in range(n):
                last = t == n - 1
                rows.append(
                    {
                        "episode_id": episode_id,
                        "step": t,
                        "reward": round(float(rng.uniform(0, 1)), 3),
                        "value": round(float(rng.normal(0.5, 0.2)), 3),
                        "terminated": last,
                        "outcome.correct": correct if last else None,
                        "outcome.format": fmt if last else None,
                        "group_id": prompt,
                        "task_id": "math" if prompt < 4 else "code",
                    }
                )
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
