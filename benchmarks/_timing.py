"""Same-run timing for the estimator benchmarks: rounds after warm-up, interleaved contenders,
median ratios with their min-max, on the thread's CPU time and on wall time.

Every contender is warmed up (JIT, caches) and calibrated to run for about ``min_s`` per round;
each round then runs every contender back to back (the order rotates from round to round) and
records its time per call. A round's ratio is peer time / creditlab time in that round (> 1:
creditlab is faster). On a shared machine wall time includes the time other processes held the
core and CPU time does not: CPU time is what a quiet machine would show as wall time, up to cache
effects, so both are reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Contender:
    name: str
    fn: Callable[[], object]
    rounds: int | None = None  # None: every round (slow baselines take fewer)
    cpu: list[float] = field(default_factory=list)  # seconds per call, one entry per round
    wall: list[float] = field(default_factory=list)
    calls: int = 1


def measure(contenders: list[Contender], rounds: int, min_s: float) -> None:
    """Warm up, calibrate the calls per round, then time the contenders round by round, interleaved."""
    for c in contenders:
        c.fn()  # JIT, caches, first touch of buffers
        t0 = time.thread_time()
        c.fn()
        once = max(time.thread_time() - t0, 1e-6)
        c.calls = max(1, min(1000, math.ceil(min_s / once)))
    for k in range(rounds):
        order = contenders[k % len(contenders) :] + contenders[: k % len(contenders)]
        for c in order:
            if c.rounds is not None and len(c.cpu) >= c.rounds:
                continue
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(c.calls):
                c.fn()
            c.cpu.append((time.thread_time() - c0) / c.calls)
            c.wall.append((time.perf_counter() - w0) / c.calls)


def ratio_text(peer: list[float], ours: list[float]) -> str:
    """Median of the per-round ratios peer / ours and their min-max."""
    rs = [p / o for p, o in zip(peer, ours)]
    return f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"


def ms(c: Contender, rounds: int | None = None) -> str:
    """Median CPU milliseconds per call (over the first ``rounds`` rounds)."""
    return f"{1e3 * statistics.median(c.cpu[:rounds]):.3f}"
