"""Throughput of a LaRe factor function through the sandbox, next to calling it in-process.

    .venv/bin/python benchmarks/bench_sandbox.py            # ~30 s
    .venv/bin/python benchmarks/bench_sandbox.py --quick    # a few seconds
    .venv/bin/python benchmarks/bench_sandbox.py --startup  # worker start-up time only
    .venv/bin/python benchmarks/bench_sandbox.py --generate # `creditlab program generate` end to end

The same simple factor function (Hopper-like: 17 observation values, 6 actions, 4 factors) is
evaluated (a) in this process, as plain Python (what the reference LaRe code does with ``exec``),
and (b) through :func:`creditlab.programs.lare_features` (persistent confined worker, arrays
over pipes), on the same data, at several batch sizes. Reported: steps per second of each and
their ratio (sandbox / in-process; 1.0 means no overhead), plus the round-trip latency of one
1-step call and the start-up time of a worker (start + load of the program, median of 10; next
to it, a bare ``python -I -c "import numpy"`` as the floor any worker pays).

``--generate`` times ``creditlab program generate examples/programs/hopper.yaml --n 5`` end to
end (a fresh CLI process, no cache) against the scripted OpenAI-compatible server of the tests
(``tests/helpers/fake_llm_server.py`` on loopback): five candidates (one needs a repair round), the
self-verification merge, each validated in its own sandbox worker: 7 sandboxed validations.

Times are the median of several repeats after a warm-up; the machine is shared, so compare
ratios, not absolute numbers. The issue's target: >= 100k steps/s through the sandbox.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from creditlab.programs import Program, lare_features, probe_layers

CODE = """
import numpy as np

def evaluation_func(observation, action):
    speed = observation[:, 8:9]
    height = observation[:, 0:1]
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    upright = (np.abs(observation[:, 1:2]) < 0.2).astype(np.float64)
    return [speed, height, effort, upright]
"""


def in_process_function():
    ns: dict = {}
    exec(compile(CODE, "<benchmark>", "exec"), ns)  # trusted benchmark code: the baseline without a sandbox
    fn = ns["evaluation_func"]
    return lambda o, a: np.concatenate(fn(o, a), axis=1)


def timed(fn, *args, repeats: int) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup(repeats: int) -> None:
    import subprocess
    import sys

    from creditlab.programs import SandboxedProgram

    def bare():
        subprocess.run([sys.executable, "-I", "-c", "import numpy"], check=True)

    def sandboxed():
        with SandboxedProgram(CODE, entry="evaluation_func"):
            pass

    t_bare = timed(bare, repeats=repeats)
    t_box = timed(sandboxed, repeats=repeats)
    print(
        f"worker start-up (start + load, median of {repeats}): {t_box * 1e3:.0f} ms; "
        f"bare python -I -c 'import numpy': {t_bare * 1e3:.0f} ms; ratio {t_box / t_bare:.2f}"
    )


GENERATE_ANSWERS = [
    # candidate 0: a wrong shape first (one repair round), then valid
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [observation[:, 0:2]]\n",
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [observation[:, 0:1]]\n",
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [observation[:, 5:6]]\n",
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [np.sum(action ** 2, axis=1, keepdims=True)]\n",
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [np.abs(observation[:, 1:2])]\n",
    "import numpy as np\ndef evaluation_func(observation, action):\n    return [np.tanh(observation[:, 6:7])]\n",
    CODE,  # the merge
]


def generate(repeats: int) -> None:
    import json
    import os
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tests.helpers.fake_llm_server import FakeLLMServer

    def answer(req, i):
        code = GENERATE_ANSWERS[min(i, len(GENERATE_ANSWERS) - 1)]
        return json.dumps({"Understand": "hop", "Analyze": "speed", "Functions": code})

    times = []
    for _ in range(repeats):
        with FakeLLMServer(answer) as server, tempfile.TemporaryDirectory() as out:
            cmd = [
                os.path.join(os.path.dirname(sys.executable), "creditlab"),
                "program",
                "generate",
                os.path.join(root, "examples/programs/hopper.yaml"),
                "--out",
                out,
                "--n",
                "5",
                "--concurrency",
                "1",
                "--model",
                "fake",
                "--base-url",
                server.url,
                "--cache-dir",
                "",
            ]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"generate failed ({done.returncode}):\n{done.stderr[-2000:]}")
    t0 = time.perf_counter()
    subprocess.run([cmd[0], "program", "--help"], capture_output=True, check=True)
    t_cli = time.perf_counter() - t0
    print(
        f"program generate end to end (5 candidates + merge, 7 sandboxed validations, median of {repeats}): "
        f"{statistics.median(times):.2f} s (min {min(times):.2f} s); `creditlab program --help` alone: {t_cli:.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--startup", action="store_true", help="only measure the worker start-up time")
    ap.add_argument("--generate", action="store_true", help="only time `creditlab program generate` end to end")
    args = ap.parse_args()
    if args.generate:
        generate(3)
        return
    print("sandbox layers:", "; ".join(f"{k} {v}" for k, v in probe_layers().items()))
    startup(10)
    if args.startup:
        return
    total = 200_000 if args.quick else 2_000_000
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((total, 17))
    act = rng.uniform(-1, 1, (total, 6))
    local = in_process_function()
    prog = Program(code=CODE, kind="factors", obs_dim=17, act_dim=6, num_factors=4, origin="hand-written")
    print(f"{'rows per call':>14} {'in-process steps/s':>20} {'sandbox steps/s':>17} {'ratio':>7}")
    with lare_features(prog, chunk_rows=1 << 16) as phi:
        assert np.allclose(phi(obs[:1000], act[:1000]), local(obs[:1000], act[:1000]))
        for batch in (1_000, 10_000, 100_000, total):
            n_calls = total // batch

            def run_local(b=batch, n=n_calls):
                for i in range(n):
                    local(obs[i * b : (i + 1) * b], act[i * b : (i + 1) * b])

            def run_sandbox(b=batch, n=n_calls):
                for i in range(n):
                    phi(obs[i * b : (i + 1) * b], act[i * b : (i + 1) * b])

            t_local = timed(run_local, repeats=repeats)
            t_box = timed(run_sandbox, repeats=repeats)
            steps = batch * n_calls
            print(f"{batch:>14,} {steps / t_local:>20,.0f} {steps / t_box:>17,.0f} {t_local / t_box:>7.3f}")
        one_local = timed(lambda: local(obs[:1], act[:1]), repeats=200)
        one_box = timed(lambda: phi(obs[:1], act[:1]), repeats=200)
    print(
        f"1-step call latency: in-process {one_local * 1e6:.1f} us, sandbox {one_box * 1e6:.1f} us (round trip over pipes)"
    )


if __name__ == "__main__":
    main()
