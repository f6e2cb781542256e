"""Where runs execute: in this process, or as Ray tasks (a local Ray or an existing cluster).

An executor maps a picklable function over run configurations and yields ``(item, result)``
pairs as runs finish, where ``result`` is the function's return value or the exception that
killed the run (a crashed worker process included), so the sweep can go on. ``on_start(item)`` is
called when a run is handed to a worker, which drives the "running" count of the progress display.

Ray runs one task per CPU (``num_cpus=1``) and keeps at most as many tasks in flight as the cluster
has CPUs, so "running" is exact and nothing queues inside Ray.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["InProcessExecutor", "RayExecutor", "RunCrashed"]


class RunCrashed(Exception):
    """A run's worker died or raised outside the run's own error handling; carries the traceback text."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback_text = traceback_text or message


class InProcessExecutor:
    """Runs one run after another in this process (``--no-ray``)."""

    name = "in-process"
    slots = 1

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any], on_start: Callable[[Any], None] | None = None
    ) -> Iterator[tuple[Any, Any]]:
        for item in items:
            if on_start is not None:
                on_start(item)
            try:
                result = fn(item)
            except Exception as exc:  # noqa: BLE001 - reported as a crashed run, the sweep goes on
                result = RunCrashed(repr(exc), traceback.format_exc())
            yield item, result

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RayExecutor:
    """Runs every run as a Ray task with one CPU.

    Args:
        address: an existing cluster (``ray://host:10001`` or ``host:6379``); None starts a local Ray
            with ``num_cpus`` CPUs (default: this machine's cores).
        num_cpus: CPUs of the local Ray (ignored with ``address``).
        temp_dir: Ray's session folder for a local Ray (default: Ray's, under the temp folder).

    A local Ray is started with ``RAY_AUTH_MODE=disabled`` unless the variable is already set, so it
    writes no token into ``~/.ray``, and with ``RAY_worker_niceness=0`` (workers keep the driver's
    priority instead of Ray's default +15); it is shut down by :meth:`close`. Workers need creditlab
    installed (on a cluster: on every node).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, temp_dir: str | None = None):
        import logging

        import ray

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
                "configure_logging": True,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                # Ray lowers its workers' priority by 15 nice levels by default, which starves runs on a
                # shared machine; keep the driver's niceness (run the driver under `nice` to yield).
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    _temp_dir=temp_dir,
                    runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
                    **kwargs,
                )
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.address = address

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any], on_start: Callable[[Any], None] | None = None
    ) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        pending: dict[Any, Any] = {}
        queue = iter(items)

        def submit() -> bool:
            try:
                item = next(queue)
            except StopIteration:
                return False
            if on_start is not None:
                on_start(item)
            pending[remote.remote(item)] = item
            return True

        while len(pending) < self.slots and submit():
            pass
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            item = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - worker crash, OOM kill, task error
                result = RunCrashed(f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
            submit()
            yield item, result

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
