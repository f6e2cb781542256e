"""The real local model (SmolLM2-135M-Instruct): server throughput vs HF generate, and where the time
of one GRPO step goes.

    nice -n 10 .venv/bin/python benchmarks/bench_local_llm.py            # ~10 minutes here
    nice -n 10 .venv/bin/python benchmarks/bench_local_llm.py --rounds 1 --skip-trl

Part 1 -- tokens per second on the same prompts, greedy, one CPU thread everywhere, in the same
run, engines interleaved round by round:

* HF ``generate`` in this process, one prompt at a time (batch 1), and all prompts at once
  (batch = number of prompts, left padding);
* ``transformers serve`` (creditlab llm serve --backend transformers) over HTTP, one request at a time;
* llama.cpp's server (--backend llama-cpp) over HTTP, when llama-cpp-python is installed.

Tokens/s = generated tokens / wall time (prompt processing included), and tokens per CPU-second
(the engine's process CPU time: this process for HF, the server's child process for the servers),
which the load of a shared machine disturbs much less than wall time. Reported: the median over
rounds with the range, and each engine's ratio to HF batch 1 (median of the per-round ratios).

Part 2 -- one CreditlabGRPOTrainer step (turn RLOO) on the two-turn chat task of
tests/integrations/test_trl_real_model.py (2 prompts x 2 generations, <= 10 model tokens per turn), split into:
rollout generation (HF generate inside the rollout_func), reward functions, the advantage function,
the rest of TRL's scoring, the loss forward, backward, and the optimizer step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Write a Python function that returns the squared norm of a NumPy vector.",
    "Explain in two sentences what a reward function is in reinforcement learning.",
    "List three fruits and their colours.",
    "What is the capital of France? Answer in one sentence.",
]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _chat(base_url: str, prompt: str, max_tokens: int) -> int:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=1200) as resp:
        return int(json.loads(resp.read())["usage"]["completion_tokens"])


def throughput(rounds: int, max_tokens: int, cache_dir: str | None) -> None:
    import importlib.util

    from creditlab.llm.pretrained import load_causal_lm, model_folder
    from creditlab.programs.local_llm import LocalLLMServer

    folder, _ = model_folder("smollm2", cache_dir=cache_dir)
    lm = load_causal_lm(folder)
    model, tok = lm.model, lm.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    encoded = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"]
        for p in PROMPTS
    ]

    def hf_single() -> tuple[int, float, float]:
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for ids in encoded:
            x = torch.tensor([ids])
            with torch.no_grad():
                out = model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    eos_token_id=end,
                    pad_token_id=end,
                )
            row = out[0, x.shape[1] :].tolist()
            n += row.index(end) + 1 if end in row else len(row)
        return n, time.perf_counter() - t0, time.process_time() - c0

    def hf_batch() -> tuple[int, float, float]:
        width = max(len(ids) for ids in encoded)
        x = torch.tensor([[end] * (width - len(ids)) + ids for ids in encoded])
        attn = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = model.generate(
                x, attention_mask=attn, max_new_tokens=max_tokens, do_sample=False, eos_token_id=end, pad_token_id=end
            )
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum((row.index(end) + 1 if end in row else len(row)) for row in out[:, width:].tolist())
        return n, seconds, cpu

    def server_engine(server):
        def run() -> tuple[int, float, float]:
            t0, c0 = time.perf_counter(), _cpu_seconds(server.pid)
            n = sum(_chat(server.base_url, p, max_tokens) for p in PROMPTS)
            return n, time.perf_counter() - t0, _cpu_seconds(server.pid) - c0

        return run

    servers = [LocalLLMServer(folder, backend="transformers", name="smollm2", port=0, threads=1).start()]
    engines = {
        "HF generate, batch 1": hf_single,
        f"HF generate, batch {len(PROMPTS)}": hf_batch,
        "transformers serve (HTTP)": server_engine(servers[0]),
    }
    if importlib.util.find_spec("llama_cpp") is not None:
        servers.append(LocalLLMServer("smollm2", backend="llama-cpp", port=0, threads=1).start())
        engines["llama.cpp server (HTTP)"] = server_engine(servers[1])
    try:
        for run in engines.values():  # warm-up
            run()
        rates: dict[str, list[float]] = {k: [] for k in engines}
        per_cpu: dict[str, list[float]] = {k: [] for k in engines}
        tokens: dict[str, list[int]] = {k: [] for k in engines}
        for r in range(rounds):
            for name, run in engines.items():
                n, seconds, cpu = run()
                rates[name].append(n / seconds)
                per_cpu[name].append(n / max(cpu, 1e-9))
                tokens[name].append(n)
            print(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {rates[k][-1]:.1f} tok/s ({per_cpu[k][-1]:.1f}/CPU-s)" for k in engines),
                flush=True,
            )
    finally:
        for s in servers:
            s.close()
    base = "HF generate, batch 1"
    print(
        f"\n{len(PROMPTS)} prompts, greedy, <= {max_tokens} new tokens each, 1 thread, {rounds} rounds; torch {torch.__version__}"
    )
    print(
        "| engine | tokens per round | tokens/s (wall) | ratio to HF batch 1 (wall) | tokens per CPU-second | ratio to HF batch 1 (CPU) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")

    def cell(values):
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    for name in engines:
        wall = [v / b for v, b in zip(rates[name], rates[base])]
        cpu = [v / b for v, b in zip(per_cpu[name], per_cpu[base])]
        print(
            f"| {name} | {statistics.median(tokens[name]):.0f} | {cell(rates[name])} | {cell(wall)} | {cell(per_cpu[name])} | {cell(cpu)} |"
        )


def trl_step(cache_dir: str | None) -> None:
    import trl
    from datasets import Dataset

    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage
    from creditlab.llm.pretrained import load_causal_lm, model_folder
    from tests.integrations.test_trl_real_model import QUESTIONS, TwoTurnChat, names_a_colour

    folder, _ = model_folder("smollm2", cache_dir=cache_dir)
    lm = load_causal_lm(folder)
    times: dict[str, float] = {}

    cpu: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0

        wrapper.__name__ = getattr(fn, "__name__", name)
        return wrapper

    rollout = TwoTurnChat(lm.tokenizer)
    timed_rollout = timed("rollout", rollout)
    advantage = TurnRLOOAdvantage(turn_reward_column="turn_rewards")
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS] * 4})
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(
            output_dir=d,
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=64,
            max_steps=1,
            learning_rate=1e-5,
            logging_steps=1,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            beta=0.0,
            seed=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = CreditlabGRPOTrainer(
                model=lm.model,
                reward_funcs=[timed("reward functions", names_a_colour)],
                args=args,
                train_dataset=dataset,
                processing_class=lm.tokenizer,
                rollout_func=timed_rollout,
                advantage_fn=timed("advantage function (creditlab)", advantage),
            )
            trainer._generate_and_score_completions = timed(
                "generate and score (TRL)", trainer._generate_and_score_completions
            )
            trainer.training_step = timed("training step", trainer.training_step)
            trainer.compute_loss = timed("loss forward", trainer.compute_loss)
            trainer.train = timed("train", trainer.train)
            trainer.train()
            total = times["train"]
    parts = {
        "rollout generation (HF generate in rollout_func)": times["rollout"],
        "reward functions": times["reward functions"],
        "advantage function (creditlab)": times["advantage function (creditlab)"],
        "rest of TRL's scoring (padding, masks, metrics)": times["generate and score (TRL)"]
        - rollout.seconds
        - times["reward functions"]
        - times["advantage function (creditlab)"],
        "loss forward": times["loss forward"],
        "backward": times["training step"] - times["generate and score (TRL)"] - times["loss forward"],
        "optimizer step and trainer overhead": total - times["training step"],
    }
    cpu_parts = {
        "rollout generation (HF generate in rollout_func)": cpu["rollout"],
        "reward functions": cpu["reward functions"],
        "advantage function (creditlab)": cpu["advantage function (creditlab)"],
        "rest of TRL's scoring (padding, masks, metrics)": cpu["generate and score (TRL)"]
        - cpu["rollout"]
        - cpu["reward functions"]
        - cpu["advantage function (creditlab)"],
        "loss forward": cpu["loss forward"],
        "backward": cpu["training step"] - cpu["generate and score (TRL)"] - cpu["loss forward"],
        "optimizer step and trainer overhead": cpu["train"] - cpu["training step"],
    }
    print(
        f"\none GRPO step, turn RLOO, 4 samples x 2 turns (<= 10 tokens each), 1 thread: {total:.1f} s wall, "
        f"{cpu['train']:.1f} CPU-s"
    )
    print("| part | wall s | CPU s | share of CPU |")
    print("| --- | --- | --- | --- |")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.2f} | {cpu_parts[name]:.2f} | {100 * cpu_parts[name] / cpu['train']:.0f} % |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--cache-dir", help="model conversion cache (default CREDITLAB_MODEL_CACHE or ~/.cache/creditlab/models)"
    )
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if not args.skip_throughput:
        throughput(args.rounds, args.max_tokens, args.cache_dir)
    if not args.skip_trl:
        trl_step(args.cache_dir)


if __name__ == "__main__":
    main()
