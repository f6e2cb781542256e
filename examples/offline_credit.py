"""Offline credit on logged episodes: fit a return-decomposition model with held-out early
stopping, save it, reload it, and turn its per-step credit into advantages.

    python examples/offline_credit.py                      # a synthetic log, RRD, 2,000-update budget
    python examples/offline_credit.py --log my_log.parquet  # your own log (obs, action, reward or outcome)
    python examples/offline_credit.py --tiny                # seconds (what CI runs)

The log has one row per step (docs/data-format.md): ``episode_id``, ``step``, ``obs``, ``action``
and the episode's feedback, here the episodic reward paid on the last step (0 elsewhere). The
synthetic log also keeps the hidden per-step reward (``hidden_reward``, never shown to the
model) so the script can say how close the learned credit comes to it. The command-line twin:

    creditlab advantages log.jsonl --credit rrd --holdout 0.2 --method reinforce_pp --save-assigner rrd.pt --out adv.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import creditlab as cl
from creditlab.commands import fit_assigner
from creditlab.credit import load_assigner, save_assigner
from creditlab.tables import read_table, write_back, write_table


def make_log(path: Path, episodes: int, seed: int = 0) -> Path:
    """A logged dataset: 4-d observations, a 2-d action, and a hidden per-step reward
    ``r = obs[0] - 0.5 * |action|^2`` of which the log shows only the episode's sum, on its last step."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(episodes):
        t_len = int(rng.integers(5, 20))
        obs, act = rng.normal(size=(t_len, 4)), rng.normal(size=(t_len, 2))
        hidden = obs[:, 0] - 0.5 * (act**2).sum(axis=1)
        for t in range(t_len):
            rows.append(
                {
                    "episode_id": e,
                    "step": t,
                    "obs": obs[t].round(5).tolist(),
                    "action": act[t].round(5).tolist(),
                    "reward": float(hidden.sum()) if t == t_len - 1 else 0.0,
                    "hidden_reward": float(hidden[t]),
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", help="logged episodes (.jsonl or .parquet); default: write a synthetic one into --out")
    p.add_argument("--out", default="runs/offline-credit", help="output folder (default runs/offline-credit)")
    p.add_argument("--credit", default="rrd", help="learned assigner: rd, rrd, lare, rudder (default rrd)")
    p.add_argument("--episodes", type=int, default=400, help="episodes of the synthetic log (default 400)")
    p.add_argument("--updates", type=int, default=2000, help="update budget; early stopping usually ends sooner")
    p.add_argument("--holdout", type=float, default=0.2, help="held-out fraction of the episodes (default 0.2)")
    p.add_argument("--patience", type=int, default=5, help="evaluations without improvement before stopping")
    p.add_argument(
        "--tiny", action="store_true", help="a few seconds: 40 episodes, 60 updates, a 32-unit model, lr 3e-3"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair to a shared machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"hidden": [32], "lr": 3e-3} if args.tiny else {}
    episodes_n, updates = (40, 60) if args.tiny else (args.episodes, args.updates)

    # 1. the logged episodes
    log = Path(args.log) if args.log else make_log(out / "log.jsonl", episodes_n)
    table = read_table(log)
    episodes = cl.Episodes.from_table(table, source=str(log))
    print(f"{log}: {episodes.num_episodes} episodes, {episodes.num_steps} steps")

    # 2. fit with early stopping on a held-out split (the best state is kept)
    assigner = cl.get_method(args.credit).factory(**params)

    def progress(done: int, budget: int, train_loss: float, holdout_loss: float, improved: bool) -> None:
        print(
            f"  {done:5d}/{budget} updates  train loss {train_loss:8.4f}  held-out loss {holdout_loss:8.4f}{'  *' if improved else ''}"
        )

    report = fit_assigner(
        assigner,
        episodes,
        num_updates=updates,
        holdout=args.holdout,
        eval_every=max(1, updates // 20),
        patience=args.patience,
        log=progress,
    )
    m = report.metrics
    print(
        f"kept the state after {int(m['credit/best_updates'])} of {int(m['credit/updates_run'])} updates "
        f"(held-out loss {m['credit/holdout_loss']:.4f} on {int(m['credit/holdout_episodes'])} episodes)"
    )

    # 3. save, and reload as a later process would
    saved = save_assigner(assigner, out / f"{args.credit}.pt")
    reloaded = load_assigner(saved)
    credit = np.asarray(reloaded.assign(episodes).rewards, dtype=np.float64)
    same = float(np.abs(credit - np.asarray(assigner.assign(episodes).rewards)).max())
    print(f"saved {saved}; the reloaded assigner gives the same credit (max difference {same:.2e})")

    # 4. credit -> advantages: the credited rewards replace the episodic feedback
    credited = episodes.replace(rewards=credit, reward_present=None, outcomes=None, outcome_present=None)
    adv = cl.get_method("reinforce_pp")(credited)
    result = write_table(
        write_back(table, episodes.row_index, episodes.mask, {"credit_reward": credit, "advantage": adv.advantages}),
        out / "advantages.parquet",
    )
    print(f"wrote {result}")
    summary = {**m, "reload_max_difference": same}
    if "hidden_reward" in episodes.extras:  # only a synthetic log knows the truth
        mask = np.asarray(episodes.mask)
        corr = float(np.corrcoef(credit[mask], episodes.extras["hidden_reward"][mask])[0, 1])
        print(f"correlation of the credit with the hidden per-step reward: {corr:.3f}")
        summary["hidden_reward_correlation"] = corr
    return summary


if __name__ == "__main__":
    main()
