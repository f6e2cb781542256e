"""Generate, repair, verify, select and refine LLM-written programs.

* :func:`generate_lare_factors` -- LaRe: n candidate factor functions (temperature 1), each
  validated in the sandbox and repaired from its error text (up to ``repair_rounds``), then the
  self-verification turn: the passing candidates are shown to the LLM, which writes one merged
  function (temperature 0.3). Falls back to the first passing candidate, or to no program (LaRe's
  fallback: plain RRD on raw (s, a)) when nothing passes.
* :func:`refine_reward` -- Eureka-style loop for dense rewards: per iteration sample K candidates,
  validate and repair them, (optionally) ask an Auto MC-Reward critic, score each passing one with
  an injected ``train_and_score(program) -> TrainScore``, keep the best, and continue the chat with
  a reward reflection built from per-component statistics (plus, optionally, an Auto MC-Reward
  trajectory analysis of failed episodes).
* CALM: :func:`calm_subgoals` (decomposition) and :func:`calm_label_transitions` (per-transition
  subgoal check), :func:`calm_rewards`.

Every step is recorded: :class:`GenerationResult` carries the candidates (all prompts, answers,
validation reports, scores) and a ``provenance`` dict that :meth:`GenerationResult.save` writes next
to the chosen program.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .. import __version__
from ..errors import RangeError, ShapeError
from .client import Completion, LLMClient
from .errors import LLMError, ProgramError, ResponseFormatError
from .program import Program
from .progress import GenerationEvent, ProgressCallback, progress_callback
from .prompts import (
    analyzer_messages,
    critic_messages,
    designer_messages,
    extract_code,
    lare_merge_messages,
    lare_messages,
    parse_json_answer,
    reflection_message,
    repair_message,
    reward_messages,
    subgoal_check_messages,
    subgoal_messages,
)
from .sandbox import SandboxConfig
from .spec import TaskSpec
from .validate import KINDS, ValidationReport, check_program

__all__ = [
    "Attempt",
    "Candidate",
    "GenerationResult",
    "TrainScore",
    "develop_candidate",
    "generate_lare_factors",
    "refine_reward",
    "critic_review",
    "analyze_trajectories",
    "summarize_episode",
    "calm_subgoals",
    "calm_label_transitions",
    "calm_rewards",
    "CalmLabels",
]


class TrainScore(NamedTuple):
    """What a short training run reports about one reward program (Eureka's fitness + statistics).

    Attributes:
        fitness: the task fitness at the end of training (higher is better; e.g. success rate or
            the true return of evaluation episodes).
        fitness_curve: fitness at evenly spaced checkpoints during training.
        components: per reward component, its mean per step at the same checkpoints.
        failed_episodes: summaries of evaluation episodes that failed (for the trajectory analyzer).
        metrics: anything else (steps, seconds ...).
    """

    fitness: float
    fitness_curve: list[float]
    components: dict[str, list[float]]
    failed_episodes: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}


@dataclass
class Attempt:
    """One answer of the LLM and what validation said about it."""

    round: int
    response: str
    code: str | None
    report: ValidationReport
    completion: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "response": self.response,
            "code": self.code,
            "report": self.report.to_dict(),
            "completion": self.completion,
        }


@dataclass
class Candidate:
    """A chain of attempts (first answer, then repairs) for one sample; ``program`` is set if one passed."""

    index: int
    role: str
    messages: list[dict[str, str]]
    attempts: list[Attempt] = field(default_factory=list)
    program: Program | None = None
    score: TrainScore | None = None
    critic: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.program is not None and self.error is None

    @property
    def final_response(self) -> str:
        return self.attempts[-1].response if self.attempts else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "role": self.role,
            "ok": self.ok,
            "messages": self.messages,
            "attempts": [a.to_dict() for a in self.attempts],
            "critic": self.critic,
            "score": None if self.score is None else self.score._asdict(),
            "error": self.error,
            "code_sha256": self.program.sha256 if self.program is not None else None,
        }


class GenerationResult(NamedTuple):
    """The chosen program (or ``None``), every candidate, totals and the provenance record."""

    program: Program | None
    candidates: list[Candidate]
    metrics: dict[str, float]
    provenance: dict[str, Any]

    def save(self, folder: str) -> str:
        """Write the chosen program (if any) and ``provenance.json`` into ``folder``."""
        from pathlib import Path

        from .program import write_json_atomic

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        if self.program is not None:
            self.program.save(out, provenance=self.provenance)
        else:
            write_json_atomic(out / "provenance.json", self.provenance)
        return str(out)


def _completion_record(c: Completion) -> dict[str, Any]:
    return {
        "model": c.model,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "cost": c.cost,
        "cached": c.cached,
        "seconds": round(c.seconds, 4),
        "key": c.key,
        "finish_reason": c.finish_reason,
        "retries": c.retries,
    }


def develop_candidate(
    client: LLMClient,
    messages: Sequence[dict[str, str]],
    kind: str,
    probe: tuple[np.ndarray, np.ndarray],
    *,
    index: int = 0,
    role: str = "sample",
    sample: int = 0,
    temperature: float = 1.0,
    repair_rounds: int = 5,
    config: SandboxConfig | None = None,
    review: Callable[[str], tuple[bool, list[str]]] | None = None,
    spec: TaskSpec | None = None,
    on_progress: ProgressCallback | None = None,
) -> Candidate:
    """Ask for a program, validate it in the sandbox, and repair it from the error text.

    Args:
        client: the LLM client.
        messages: the chat that asks for the program.
        kind: ``factors`` or ``reward``.
        probe: ``(obs[B, obs_dim], act[B, act_dim])`` probe batch for validation.
        index, role: bookkeeping (position among candidates, ``sample``/``merge``/...).
        sample: sample index (distinct cache entries for repeated samples of one prompt).
        temperature: sampling temperature (kept for repair rounds).
        repair_rounds: how many times an error is fed back before giving up (LaRe: 5).
        config: sandbox limits for validation.
        review: optional reviewer ``code -> (ok, issues)`` (Auto MC-Reward critic) consulted once
            a program passes validation; its issues are fed back like errors.
        spec: the task spec (recorded in the program's metadata).
        on_progress: called with an ``attempt`` event per LLM answer and a ``candidate`` event at
            the end (:mod:`creditlab.programs.progress`).

    Returns:
        A :class:`Candidate`; its ``program`` is set when some attempt passed.
    """
    if repair_rounds < 0:
        raise RangeError(f"repair_rounds must be >= 0; got {repair_rounds}")
    entry = KINDS[kind][0]
    obs, act = probe
    msgs = [dict(m) for m in messages]
    cand = Candidate(index=index, role=role, messages=msgs)
    for rnd in range(repair_rounds + 1):
        try:
            comp = client.complete(msgs, temperature=temperature, sample=sample)
        except LLMError as exc:
            cand.error = f"LLM request failed: {exc}"
            break
        try:
            code = extract_code(comp.text, entry)
        except ResponseFormatError as exc:
            code = None
            report = ValidationReport(ok=False, stage="parse", problems=[str(exc)], failure_kind="format")
        else:
            report = check_program(code, kind, obs, act, config=config)
        if report.ok and review is not None:
            ok, issues = review(code)
            cand.critic.append({"round": rnd, "ok": ok, "issues": issues})
            if not ok:
                report = ValidationReport(
                    ok=False,
                    stage="critic",
                    problems=["A reviewer found problems:"] + [f"- {i}" for i in issues],
                    failure_kind="critic",
                    num_factors=report.num_factors,
                    component_names=report.component_names,
                    layers=report.layers,
                )
        cand.attempts.append(Attempt(rnd, comp.text, code, report, _completion_record(comp)))
        if on_progress is not None:
            on_progress(
                GenerationEvent(
                    "attempt",
                    candidate=index,
                    role=role,
                    round=rnd,
                    ok=report.ok,
                    failure=None if report.ok else report.failure_kind,
                )
            )
        if report.ok:
            cand.program = Program(
                code=code,
                kind=kind,
                obs_dim=int(obs.shape[1]),
                act_dim=int(act.shape[1]),
                num_factors=report.num_factors if kind == "factors" else None,
                component_names=tuple(report.component_names),
                origin="generated",
                meta={
                    "model": comp.model,
                    "spec": spec.name if spec is not None else None,
                    "role": role,
                    "candidate": index,
                    "repair_rounds_used": rnd,
                    "notes": report.notes,
                },
            )
            break
        msgs = msgs + [{"role": "assistant", "content": comp.text}, repair_message(report.feedback())]
    cand.messages = msgs
    if on_progress is not None:
        on_progress(GenerationEvent("candidate", candidate=index, role=role, ok=cand.ok))
    return cand


def _parallel(fn: Callable[[int], Candidate], n: int, workers: int) -> list[Candidate]:
    if n <= 1 or workers <= 1:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
        return list(pool.map(fn, range(n)))


def _provenance(
    spec: TaskSpec,
    client: LLMClient,
    method: str,
    params: dict[str, Any],
    candidates: list[Candidate],
    chosen: Candidate | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = client.config
    return {
        "creditlab_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": method,
        "params": params,
        "spec": spec.to_dict(),
        "llm": {
            "model": cfg.model,
            "base_url": _public_url(cfg.base_url),
            "price_input": cfg.price_input,
            "price_output": cfg.price_output,
        },
        "usage": client.metrics,
        "candidates": [c.to_dict() for c in candidates],
        "chosen": None
        if chosen is None
        else {
            "index": chosen.index,
            "role": chosen.role,
            "code_sha256": chosen.program.sha256 if chosen.program else None,
        },
        **(extra or {}),
    }


def _public_url(url: str | None) -> str | None:
    """The endpoint without credentials or query string (never store secrets in provenance)."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _candidate_metrics(cands: list[Candidate]) -> dict[str, float]:
    attempts = [a for c in cands for a in c.attempts]
    first = [c.attempts[0].report.ok for c in cands if c.attempts]
    kinds: dict[str, float] = {}
    for a in attempts:
        if not a.report.ok and a.report.failure_kind:
            key = f"programs/rejected/{a.report.failure_kind}"
            kinds[key] = kinds.get(key, 0.0) + 1.0
    return {
        "programs/candidates": float(len(cands)),
        "programs/passed": float(sum(c.ok for c in cands)),
        "programs/attempts": float(len(attempts)),
        "programs/first_try_pass_rate": float(np.mean(first)) if first else 0.0,
        "programs/repairs": float(sum(max(0, len(c.attempts) - 1) for c in cands)),
        **kinds,
    }


# ---------------------------------------------------------------------- LaRe


def generate_lare_factors(
    spec: TaskSpec,
    client: LLMClient,
    *,
    n_candidates: int = 5,
    temperature: float = 1.0,
    merge: bool = True,
    merge_temperature: float = 0.3,
    repair_rounds: int = 5,
    config: SandboxConfig | None = None,
    probe_rows: int = 16,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    progress: bool = False,
) -> GenerationResult:
    """LaRe latent-factor generation with self-verification (Qu et al. 2025, spec A4 steps 1-3).

    Args:
        spec: the task.
        client: LLM client (cached: a re-run with the same spec makes no HTTP call).
        n_candidates: candidate answers sampled at ``temperature`` (LaRe: 5 at 1.0).
        merge: ask for one merged function from the passing candidates (self-verification); with
            fewer than 2 passing candidates there is nothing to merge.
        merge_temperature: temperature of the merge turn (LaRe: 0.3).
        repair_rounds: error-feedback rounds per candidate (LaRe: 5).
        config: sandbox limits for validation.
        probe_rows, seed: size and seed of the probe batch (:meth:`TaskSpec.probe_batch`).
        on_progress: called with :class:`~creditlab.programs.progress.GenerationEvent` s (from
            the threads that ask the LLM).
        progress: show a live progress line on stderr (rich); off by default.

    Returns:
        :class:`GenerationResult`; ``program`` is ``None`` when no candidate passed (use raw
        (s, a) features then, i.e. plain RRD) and ``metrics['programs/fallback_raw']`` is 1.
    """
    if n_candidates < 1:
        raise RangeError(f"n_candidates must be >= 1; got {n_candidates}")
    emit, display = progress_callback(on_progress, progress, f"LaRe factors for {spec.name}")
    if display is not None:
        with display:
            return generate_lare_factors(
                spec,
                client,
                n_candidates=n_candidates,
                temperature=temperature,
                merge=merge,
                merge_temperature=merge_temperature,
                repair_rounds=repair_rounds,
                config=config,
                probe_rows=probe_rows,
                seed=seed,
                on_progress=emit,
            )
    t0 = time.perf_counter()
    probe = spec.probe_batch(probe_rows, seed)
    base = lare_messages(spec)
    emit(GenerationEvent("plan", total=n_candidates))

    def one(i: int) -> Candidate:
        return develop_candidate(
            client,
            base,
            "factors",
            probe,
            index=i,
            role="sample",
            sample=i,
            temperature=temperature,
            repair_rounds=repair_rounds,
            config=config,
            spec=spec,
            on_progress=emit,
        )

    cands = _parallel(one, n_candidates, client.config.max_concurrency)
    passing = [c for c in cands if c.ok]
    chosen: Candidate | None = None
    merged: Candidate | None = None
    if merge and len(passing) >= 2:
        emit(GenerationEvent("plan", total=n_candidates + 1))
        merged = develop_candidate(
            client,
            lare_merge_messages(spec, [c.final_response for c in passing]),
            "factors",
            probe,
            index=len(cands),
            role="merge",
            sample=0,
            temperature=merge_temperature,
            repair_rounds=repair_rounds,
            config=config,
            spec=spec,
            on_progress=emit,
        )
        cands.append(merged)
        if merged.ok:
            chosen = merged
    if chosen is None and passing:
        chosen = passing[0]
    metrics = _candidate_metrics(cands)
    metrics.update(client.metrics)
    metrics["programs/merged"] = float(chosen is not None and chosen.role == "merge")
    metrics["programs/fallback_raw"] = float(chosen is None)
    metrics["programs/seconds"] = time.perf_counter() - t0
    params = {
        "n_candidates": n_candidates,
        "temperature": temperature,
        "merge": merge,
        "merge_temperature": merge_temperature,
        "repair_rounds": repair_rounds,
        "probe_rows": probe_rows,
        "seed": seed,
    }
    prov = _provenance(spec, client, "lare", params, cands, chosen, {"metrics": metrics})
    emit(GenerationEvent("done", candidate=chosen.index if chosen else -1, ok=chosen is not None))
    return GenerationResult(chosen.program if chosen else None, cands, metrics, prov)


# ---------------------------------------------------------------------- Auto MC-Reward helpers


def critic_review(
    client: LLMClient, spec: TaskSpec, code: str, *, temperature: float = 0.0
) -> tuple[bool, list[str], str]:
    """Auto MC-Reward's reward critic: ``(ok, issues, raw answer)``; an unreadable answer counts as ok.

    Raises:
        LLMError: the endpoint failed.
    """
    comp = client.complete(critic_messages(spec, code), temperature=temperature)
    try:
        obj = parse_json_answer(comp.text)
    except ResponseFormatError:
        return True, [], comp.text
    issues = (
        [str(i)[:500] for i in obj.get("issues", []) if str(i).strip()] if isinstance(obj.get("issues"), list) else []
    )
    ok = bool(obj.get("ok", not issues))
    return ok, issues, comp.text


def analyze_trajectories(
    client: LLMClient,
    spec: TaskSpec,
    episodes: Sequence[Mapping[str, Any]],
    *,
    max_episodes: int = 5,
    temperature: float = 0.3,
) -> dict[str, Any]:
    """Auto MC-Reward's trajectory analyzer: causes of failure and suggested reward changes.

    Args:
        episodes: summaries of failed episodes (:func:`summarize_episode`); at most ``max_episodes`` are shown.

    Returns:
        ``{"causes": [...], "suggestions": [...], "text": raw answer}``.
    """
    if not episodes:
        return {"causes": [], "suggestions": [], "text": ""}
    comp = client.complete(analyzer_messages(spec, list(episodes)[:max_episodes]), temperature=temperature)
    try:
        obj = parse_json_answer(comp.text)
    except ResponseFormatError:
        return {"causes": [], "suggestions": [], "text": comp.text}

    def strs(x: Any) -> list[str]:
        return [str(v)[:500] for v in x] if isinstance(x, list) else []

    return {"causes": strs(obj.get("causes")), "suggestions": strs(obj.get("suggestions")), "text": comp.text}


def summarize_episode(
    spec: TaskSpec, obs: Any, act: Any, rewards: Any, *, components: Mapping[str, Any] | None = None, points: int = 4
) -> dict[str, Any]:
    """A compact, JSON-friendly summary of one episode for the trajectory analyzer.

    Args:
        obs: float[T, obs_dim] -- observations s_0 .. s_{T-1} (s_T may be appended: T+1 rows).
        act: float[T, act_dim] -- actions.
        rewards: float[T] -- the task's true rewards.
        components: per reward component, float[T] values of the program's components.
        points: number of evenly spaced steps shown with named values.
    """
    o = np.asarray(obs, dtype=np.float64)
    a = np.asarray(act, dtype=np.float64).reshape(len(act), -1)
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if o.ndim != 2 or a.shape[0] != r.shape[0] or o.shape[0] not in (r.shape[0], r.shape[0] + 1):
        raise ShapeError(
            f"summarize_episode needs obs[T(+1), o], act[T, a], rewards[T]; got {o.shape}, {a.shape}, {r.shape}"
        )
    t = r.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(points, t)).round().astype(int))
    out: dict[str, Any] = {
        "length": t,
        "return": round(float(r.sum()), 4),
        "start": spec.describe_values(o[0]),
        "end": spec.describe_values(o[-1]),
        "steps": [
            {
                "t": int(i),
                "obs": spec.describe_values(o[i]),
                "action": spec.describe_values(a[i], var="action"),
                "reward": round(float(r[i]), 4),
            }
            for i in idx
        ],
    }
    if components:
        out["component_sums"] = {k: round(float(np.sum(v)), 4) for k, v in components.items()}
    return out


# ---------------------------------------------------------------------- Eureka / Text2Reward / Auto MC-Reward loop


def refine_reward(
    spec: TaskSpec,
    client: LLMClient,
    train_and_score: Callable[[Program], TrainScore] | None = None,
    *,
    style: str = "eureka",
    iterations: int = 1,
    samples: int = 3,
    temperature: float = 1.0,
    repair_rounds: int = 3,
    critic: bool = False,
    analyzer: bool = False,
    examples: Sequence[str] = (),
    config: SandboxConfig | None = None,
    probe_rows: int = 16,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Dense reward code selected by short training runs and refined by reward reflection (Eureka).

    Args:
        spec: the task.
        client: LLM client.
        train_and_score: ``program -> TrainScore``; e.g. :class:`creditlab.programs.training.PPOTrainAndScore`
            or the benchmark runner. ``None``: no training, the first candidate that passes is chosen.
        style: ``eureka``, ``text2reward`` (Pythonic abstraction + ``examples``) or ``auto_mc``
            (Auto MC-Reward designer: sparse and dense parts).
        iterations: refinement rounds (Eureka paper: 5; repository default: 1).
        samples: candidates per round (paper: 16; repository default: 3).
        temperature: sampling temperature (1.0).
        repair_rounds: error-feedback rounds per candidate.
        critic: ask the Auto MC-Reward critic to review each program that passes validation.
        analyzer: add the Auto MC-Reward trajectory analysis of the best candidate's failed
            episodes to the reflection.
        examples: few-shot reward programs (Text2Reward).
        config: sandbox limits.
        on_progress: called with :class:`~creditlab.programs.progress.GenerationEvent` s
            (``train`` / ``scored`` around each selection run).
        progress: show a live progress line on stderr (rich); off by default.

    Returns:
        :class:`GenerationResult` with the best program over all rounds (highest fitness).
    """
    if style not in ("eureka", "text2reward", "auto_mc"):
        raise RangeError(f"style must be 'eureka', 'text2reward' or 'auto_mc'; got {style!r}")
    if iterations < 1 or samples < 1:
        raise RangeError(f"iterations and samples must be >= 1; got {iterations} and {samples}")
    emit, display = progress_callback(on_progress, progress, f"reward programs for {spec.name}")
    if display is not None:
        with display:
            return refine_reward(
                spec,
                client,
                train_and_score,
                style=style,
                iterations=iterations,
                samples=samples,
                temperature=temperature,
                repair_rounds=repair_rounds,
                critic=critic,
                analyzer=analyzer,
                examples=examples,
                config=config,
                probe_rows=probe_rows,
                seed=seed,
                on_progress=emit,
            )
    t0 = time.perf_counter()
    probe = spec.probe_batch(probe_rows, seed)
    base = designer_messages(spec) if style == "auto_mc" else reward_messages(spec, style=style, examples=examples)
    review = None
    if critic:

        def review(code: str) -> tuple[bool, list[str]]:
            try:
                ok, issues, _ = critic_review(client, spec, code)
            except LLMError as exc:  # a failed review does not block the candidate
                return True, [f"(review unavailable: {exc})"]
            return ok, issues

    conversation = base
    all_cands: list[Candidate] = []
    rounds: list[dict[str, Any]] = []
    best: Candidate | None = None
    for it in range(iterations):
        emit(GenerationEvent("plan", total=(it + 1) * samples))

        def one(j: int, conv=conversation, it=it) -> Candidate:
            return develop_candidate(
                client,
                conv,
                "reward",
                probe,
                index=it * samples + j,
                role=f"iteration{it}",
                sample=j,
                temperature=temperature,
                repair_rounds=repair_rounds,
                config=config,
                review=review,
                spec=spec,
                on_progress=emit,
            )

        cands = _parallel(one, samples, client.config.max_concurrency)
        all_cands += cands
        scored: list[Candidate] = []
        for c in cands:
            if not c.ok:
                continue
            if train_and_score is None:
                scored.append(c)
                continue
            emit(GenerationEvent("train", candidate=c.index, role=c.role, ok=True))
            try:
                c.score = train_and_score(c.program)
            except ProgramError as exc:
                c.error = f"the reward program failed during training: {exc.kind}: {exc.reason[:500]}"
                emit(GenerationEvent("scored", candidate=c.index, role=c.role, ok=False))
                continue
            emit(GenerationEvent("scored", candidate=c.index, role=c.role, ok=True, fitness=float(c.score.fitness)))
            scored.append(c)
        record: dict[str, Any] = {
            "iteration": it,
            "candidates": [c.index for c in cands],
            "passed": [c.index for c in cands if c.ok],
            "fitness": {c.index: (c.score.fitness if c.score else None) for c in scored},
        }
        if not scored:
            record["note"] = "no candidate passed; the next round samples again from the same prompt"
            rounds.append(record)
            continue
        it_best = (
            max(scored, key=lambda c: c.score.fitness if c.score is not None else -np.inf)
            if train_and_score
            else scored[0]
        )
        record["best"] = it_best.index
        if best is None or (
            it_best.score is not None and best.score is not None and it_best.score.fitness > best.score.fitness
        ):
            best = it_best
        if train_and_score is None:
            rounds.append(record)
            break
        analysis = ""
        if analyzer and it_best.score.failed_episodes:
            try:
                res = analyze_trajectories(client, spec, it_best.score.failed_episodes)
            except LLMError as exc:
                res = {"causes": [], "suggestions": [], "text": f"(analysis unavailable: {exc})"}
            record["analysis"] = res
            parts = [
                f"Likely causes: {'; '.join(res['causes'])}" if res["causes"] else "",
                f"Suggestions: {'; '.join(res['suggestions'])}" if res["suggestions"] else "",
            ]
            analysis = "\n".join(p for p in parts if p) or res.get("text", "")
        reflection = reflection_message(it_best.score.fitness_curve, it_best.score.components, analysis=analysis)
        record["reflection"] = reflection["content"]
        rounds.append(record)
        conversation = base + [{"role": "assistant", "content": it_best.final_response}, reflection]
    metrics = _candidate_metrics(all_cands)
    metrics.update(client.metrics)
    metrics["programs/seconds"] = time.perf_counter() - t0
    if best is not None and best.score is not None:
        metrics["programs/best_fitness"] = float(best.score.fitness)
    metrics["programs/failed_in_training"] = float(
        sum(c.error is not None and c.program is not None for c in all_cands)
    )
    params = {
        "style": style,
        "iterations": iterations,
        "samples": samples,
        "temperature": temperature,
        "repair_rounds": repair_rounds,
        "critic": critic,
        "analyzer": analyzer,
        "probe_rows": probe_rows,
        "seed": seed,
        "selection": "train_and_score" if train_and_score is not None else "first passing candidate",
    }
    prov = _provenance(spec, client, f"reward/{style}", params, all_cands, best, {"rounds": rounds, "metrics": metrics})
    emit(GenerationEvent("done", candidate=best.index if best else -1, ok=best is not None))
    return GenerationResult(best.program if best else None, all_cands, metrics, prov)


# ---------------------------------------------------------------------- CALM


def calm_subgoals(
    client: LLMClient, spec: TaskSpec, *, max_subgoals: int = 6, temperature: float = 0.3, repair_rounds: int = 2
) -> list[dict[str, str]]:
    """CALM step 1: the task's elementary subgoals, ``[{"name", "description"}, ...]``.

    Raises:
        ResponseFormatError: no usable list after the repair rounds.
    """
    msgs = subgoal_messages(spec, max_subgoals=max_subgoals)
    last = ""
    for _ in range(repair_rounds + 1):
        comp = client.complete(msgs, temperature=temperature)
        try:
            obj = parse_json_answer(comp.text)
            raw = obj.get("subgoals")
            if not isinstance(raw, list) or not raw:
                raise ResponseFormatError('the JSON object needs a non-empty "subgoals" list')
            goals, seen = [], set()
            for g in raw[:max_subgoals]:
                name = str(g.get("name", "")).strip() if isinstance(g, dict) else str(g).strip()
                if not name or name in seen:
                    continue
                seen.add(name)
                goals.append(
                    {
                        "name": name[:64],
                        "description": str(g.get("description", "")).strip()[:300] if isinstance(g, dict) else "",
                    }
                )
            if not goals:
                raise ResponseFormatError("the subgoals list has no named subgoal")
            return goals
        except ResponseFormatError as exc:
            last = str(exc)
            msgs = msgs + [{"role": "assistant", "content": comp.text}, repair_message(last)]
    raise ResponseFormatError(f"no usable subgoal list after {repair_rounds + 1} answers: {last}")


class CalmLabels(NamedTuple):
    """Per-transition subgoal achievements from the LLM.

    Attributes:
        achieved: bool[N, G] -- subgoal g achieved by transition n.
        names: the G subgoal names.
        metrics: ``calm/unparsed`` (answers that could not be read; counted as nothing achieved),
            ``calm/failed`` (requests that failed), plus the client's usage.
    """

    achieved: np.ndarray
    names: list[str]
    metrics: dict[str, float]


def calm_label_transitions(
    client: LLMClient,
    spec: TaskSpec,
    subgoals: Sequence[Mapping[str, str]],
    obs: Any,
    act: Any,
    next_obs: Any,
    *,
    temperature: float = 0.0,
) -> CalmLabels:
    """CALM step 2: ask, for each transition (s, a, s'), which subgoals it achieved.

    One LLM request per transition, concurrent up to ``max_concurrency`` and cached (so relabeling
    the same data is free).

    Args:
        obs, next_obs: float[N, obs_dim]; act: float[N, act_dim] (or [N] for discrete actions).
    """
    o = np.asarray(obs, dtype=np.float64)
    no = np.asarray(next_obs, dtype=np.float64)
    a = np.asarray(act, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if o.ndim != 2 or no.shape != o.shape or a.shape[0] != o.shape[0]:
        raise ShapeError(
            f"obs/next_obs must be [N, obs_dim] and act [N, act_dim]; got {o.shape}, {no.shape}, {a.shape}"
        )
    names = [str(g["name"]) for g in subgoals]
    reqs = [
        {"messages": subgoal_check_messages(spec, subgoals, o[i], a[i], no[i]), "temperature": temperature}
        for i in range(o.shape[0])
    ]
    results = client.complete_many(reqs)
    achieved = np.zeros((o.shape[0], len(names)), dtype=bool)
    unparsed = failed = 0
    for i, res in enumerate(results):
        if isinstance(res, Exception):
            failed += 1
            continue
        try:
            got = parse_json_answer(res.text).get("achieved", [])
        except ResponseFormatError:
            unparsed += 1
            continue
        if not isinstance(got, list):
            unparsed += 1
            continue
        for g in got:
            if str(g) in names:
                achieved[i, names.index(str(g))] = True
    metrics = {"calm/unparsed": float(unparsed), "calm/failed": float(failed), "calm/transitions": float(o.shape[0])}
    metrics.update(client.metrics)
    return CalmLabels(achieved, names, metrics)


def calm_rewards(labels: CalmLabels | np.ndarray, *, bonus: float = 1.0, episode_ids: Any = None) -> np.ndarray:
    """CALM auxiliary reward per transition: ``bonus`` for each subgoal achieved.

    With ``episode_ids`` (int[N], transitions in time order within each episode) only the first
    achievement of each subgoal in an episode is rewarded (option termination happens once).

    Example:
        >>> calm_rewards(np.array([[True, False], [True, True], [False, False]]), episode_ids=[0, 0, 1]).tolist()
        [1.0, 1.0, 0.0]
    """
    ach = np.asarray(labels.achieved if isinstance(labels, CalmLabels) else labels, dtype=bool)
    if ach.ndim != 2:
        raise ShapeError(f"achieved must be bool[N, G]; got shape {ach.shape}")
    if episode_ids is not None:
        ep = np.asarray(episode_ids)
        if ep.shape != (ach.shape[0],):
            raise ShapeError(f"episode_ids must have shape ({ach.shape[0]},); got {ep.shape}")
        # first occurrence of (episode, subgoal): cumulative count within episode == 1 at that row
        order = np.argsort(ep, kind="stable")
        a_sorted = ach[order].astype(np.int64)
        ep_sorted = ep[order]
        csum = np.cumsum(a_sorted, axis=0)
        starts = np.r_[True, ep_sorted[1:] != ep_sorted[:-1]]
        start_idx = np.maximum.accumulate(np.where(starts, np.arange(len(ep_sorted)), 0))
        before = np.where(start_idx[:, None] > 0, csum[np.maximum(start_idx - 1, 0)], 0)
        first = (a_sorted == 1) & ((csum - before) == 1)
        ach = np.empty_like(first)
        ach[order] = first
    return bonus * ach.sum(axis=1).astype(np.float64)
