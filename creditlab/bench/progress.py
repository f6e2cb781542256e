"""Progress of a sweep: a live display (rich) for terminals, a plain line per run for logs.

:class:`SweepProgress` is ``creditlab bench``'s live display (runs done/total, running, failed,
ETA), also ``run_sweep(..., progress=True)``; :class:`SweepLog` prints one line per finished run
(``creditlab bench --no-progress``).

The ETA counts environment steps, not runs, because budgets differ across tasks (a Hopper run
costs more than a CartPole run): ``remaining steps / (steps finished this session / elapsed)``.
Before the first run finishes it uses ``prior_steps_per_second`` per parallel slot.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["SweepProgress", "SweepLog", "format_seconds"]


def format_seconds(seconds: float | None) -> str:
    """``3725 -> '1h02m'``, ``95 -> '1m35s'``, None -> '?'.

    Example:
        >>> format_seconds(3725), format_seconds(95), format_seconds(None)
        ('1h02m', '1m35s', '?')
    """
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class SweepProgress:
    """Consumes :class:`SweepEvent` s and renders a live panel; use as ``on_event`` in a ``with`` block."""

    def __init__(
        self,
        runs,
        *,
        slots: int = 1,
        console: Console | None = None,
        prior_steps_per_second: float = 2000.0,
        title: str = "creditlab bench",
    ):
        self.steps = {r.run_id: r.task.total_steps for r in runs}
        self.slots = max(1, slots)
        self.prior = prior_steps_per_second
        self.title = title
        self.console = console or Console(stderr=True)
        self.total = len(self.steps)
        self.skipped = 0
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.running: dict[str, float] = {}
        self.finished_steps = 0.0
        self.t0 = time.perf_counter()
        self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)

    # -- events
    def __call__(self, event: Any) -> None:  # a runner.SweepEvent (runner.py imports this module)
        if event.kind == "plan":
            self.skipped = event.skipped
        elif event.kind == "start" and event.run is not None:
            self.running[event.run.run_id] = time.perf_counter()
        elif event.kind in ("done", "failed") and event.run is not None:
            rid = event.run.run_id
            self.running.pop(rid, None)
            self.finished_steps += self.steps.get(rid, 0)
            if event.kind == "done":
                self.done.add(rid)
            else:
                self.failed[rid] = str((event.payload or {}).get("error", "crashed"))
                self.console.print(f"[red]run {rid} failed:[/red] {self.failed[rid]} (traceback in its error.json)")
        self._live.update(self.render())

    # -- numbers
    def eta_seconds(self) -> float | None:
        finished = self.done | set(self.failed)
        remaining = sum(s for rid, s in self.steps.items() if rid not in finished) - self._skipped_steps()
        if remaining <= 0:
            return 0.0
        elapsed = time.perf_counter() - self.t0
        rate = self.finished_steps / elapsed if self.finished_steps > 0 and elapsed > 0 else self.prior * self.slots
        return remaining / rate

    def _skipped_steps(self) -> float:
        # skipped runs are finished already; their ids are not reported individually, so use the mean size
        return self.skipped * (sum(self.steps.values()) / max(1, self.total))

    def render(self) -> Any:
        finished = len(self.done) + self.skipped
        elapsed = time.perf_counter() - self.t0
        bar = ProgressBar(total=max(1, self.total), completed=finished + len(self.failed), width=40)
        table = Table.grid(padding=(0, 2))
        table.add_row(
            Text(self.title, style="bold"),
            bar,
            Text(f"{finished}/{self.total} done", style="green"),
            Text(f"{len(self.running)} running", style="cyan"),
            Text(f"{len(self.failed)} failed", style="red" if self.failed else "dim"),
            Text(f"elapsed {format_seconds(elapsed)}"),
            Text(f"ETA {format_seconds(self.eta_seconds())}", style="bold"),
        )
        lines = [table]
        now = time.perf_counter()
        for rid, start in list(self.running.items())[:8]:
            lines.append(Text(f"  running {rid}  ({format_seconds(now - start)})", style="dim"))
        if self.skipped:
            lines.append(Text(f"  {self.skipped} run(s) already finished in this folder were skipped", style="dim"))
        return Group(*lines)

    # -- context manager
    def __enter__(self):
        self._live.__enter__()
        return self

    def __exit__(self, *exc):
        self._live.update(self.render())
        self._live.__exit__(*exc)


class SweepLog:
    """Consumes :class:`SweepEvent` s and prints one plain line per finished or failed run.

    Example:
        >>> import io
        >>> from creditlab.bench.runner import SweepEvent
        >>> from creditlab.bench.config import get_suite
        >>> from creditlab.bench.suites import expand_runs
        >>> runs = expand_runs(get_suite("smoke").select(tasks=["cartpole"], methods=[], seeds=1))
        >>> buf = io.StringIO()
        >>> log = SweepLog(runs, console=Console(file=buf, width=120))
        >>> log(SweepEvent("plan", total=2, skipped=0))
        >>> log(SweepEvent("done", runs[0], {"metrics": {"final_return": 9.5}, "wall_seconds": 80.0}))
        >>> print(buf.getvalue().strip())
        [1/2] cartpole/episodic/seed0 done: final return 9.5 (1m20s)
    """

    def __init__(self, runs, *, console: Console | None = None):
        self.total = len(list(runs))
        self.console = console or Console(stderr=True)
        self.finished = 0

    def __call__(self, event: Any) -> None:  # a runner.SweepEvent (runner.py imports this module)
        if event.kind == "plan":
            self.total = event.total
            self.finished = event.skipped
            if event.skipped:
                self.console.print(
                    f"{event.skipped} of {event.total} runs already finished in this folder: skipped", highlight=False
                )
        elif event.kind in ("done", "failed") and event.run is not None:
            self.finished += 1
            payload = event.payload or {}
            took = format_seconds(payload.get("wall_seconds"))
            if event.kind == "done":
                ret = (payload.get("metrics") or {}).get("final_return")
                what = f"final return {ret:.4g}" if isinstance(ret, (int, float)) else "done"
                self.console.print(
                    f"[{self.finished}/{self.total}] {event.run.run_id} done: {what} ({took})",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
            else:
                self.console.print(
                    f"[{self.finished}/{self.total}] {event.run.run_id} FAILED: {payload.get('error', 'crashed')} "
                    "(traceback in its error.json)",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
