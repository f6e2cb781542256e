"""Progress of ``program generate``: events from the generation loop and a display for them.

:func:`~creditlab.programs.generate_lare_factors` and :func:`~creditlab.programs.refine_reward`
take ``on_progress`` (any callable receiving :class:`GenerationEvent` s, called from the worker
threads that ask the LLM) and ``progress=True`` (the display below, on stderr). Library calls print
nothing unless asked; ``creditlab program generate`` shows the display (``--no-progress``: off).

Events, in order: ``plan`` (``total`` candidates to develop), per LLM answer ``attempt``
(``candidate``, ``round``, ``ok``, ``failure`` -- why validation rejected it), per candidate
``candidate`` (``ok``), for reward programs ``train`` / ``scored`` (``fitness``) around each
selection run, and ``done``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GenerationEvent", "GenerationProgress", "ProgressCallback", "progress_callback"]


@dataclass(frozen=True)
class GenerationEvent:
    """One step of a generation: see the module docstring for the kinds.

    Attributes:
        kind: ``plan``, ``attempt``, ``candidate``, ``train``, ``scored`` or ``done``.
        candidate: the candidate's index (-1 for ``plan`` / ``done``).
        role: ``sample``, ``merge``, ``iteration<k>``.
        round: the repair round of an ``attempt`` (0 = the first answer).
        ok: the attempt / candidate passed validation.
        failure: the kind of validation failure of a rejected attempt (``format``, ``runtime``, ...).
        total: candidates planned (``plan``; grows when a merge or a new iteration starts).
        fitness: selection fitness (``scored``).
    """

    kind: str
    candidate: int = -1
    role: str = ""
    round: int = 0
    ok: bool = False
    failure: str | None = None
    total: int = 0
    fitness: float | None = None


ProgressCallback = Callable[[GenerationEvent], None]


def _noop(event: GenerationEvent) -> None:
    return None


def progress_callback(on_progress: ProgressCallback | None, progress: bool, title: str) -> tuple[ProgressCallback, Any]:
    """``(callback, display or None)``: ``on_progress`` and, with ``progress``, a :class:`GenerationProgress`."""
    display = GenerationProgress(title=title) if progress else None
    if display is None:
        return on_progress or _noop, None
    if on_progress is None:
        return display, display

    def both(event: GenerationEvent) -> None:
        display(event)
        on_progress(event)

    return both, display


class GenerationProgress:
    """A live line for a generation (rich, on stderr): candidates passed / failed / planned, LLM
    answers, repairs, selection runs, elapsed time. Thread-safe; use as ``on_progress`` in a
    ``with`` block (or as the display :func:`progress_callback` returns)."""

    def __init__(self, *, console: Any = None, title: str = "program generate"):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.title = title
        self.total = 0
        self.answers = 0
        self.repairs = 0
        self.passed: set[int] = set()
        self.failed: set[int] = set()
        self.training: int | None = None
        self.scored = 0
        self.best: float | None = None
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)

    def __call__(self, event: GenerationEvent) -> None:
        with self._lock:
            if event.kind == "plan":
                self.total = max(self.total, event.total)
            elif event.kind == "attempt":
                self.answers += 1
                self.repairs += int(event.round > 0)
            elif event.kind == "candidate":
                (self.passed if event.ok else self.failed).add(event.candidate)
            elif event.kind == "train":
                self.training = event.candidate
            elif event.kind == "scored":
                self.training = None
                self.scored += 1
                if event.fitness is not None and (self.best is None or event.fitness > self.best):
                    self.best = event.fitness
            self._live.update(self.render())

    def render(self) -> Any:
        from rich.text import Text

        parts = [
            f"{self.title}: {len(self.passed)} passed, {len(self.failed)} failed of {self.total} candidates",
            f"{self.answers} LLM answers ({self.repairs} repairs)",
        ]
        if self.scored or self.training is not None:
            parts.append(f"{self.scored} scored" + (f", best fitness {self.best:.4g}" if self.best is not None else ""))
        if self.training is not None:
            parts.append(f"training candidate {self.training}")
        elapsed = int(time.perf_counter() - self.t0)
        parts.append(f"elapsed {elapsed // 60}m{elapsed % 60:02d}s" if elapsed >= 60 else f"elapsed {elapsed}s")
        return Text(" | ".join(parts))

    def __enter__(self):
        self._live.__enter__()
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._live.update(self.render())
        self._live.__exit__(*exc)
