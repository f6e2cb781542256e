"""Prompt builders for LLM-written reward programs, and parsers for the answers.

Each builder returns a chat (a list of ``{"role", "content"}`` messages) built from a
:class:`~creditlab.programs.spec.TaskSpec`. The wording is ours; the structure follows the papers
(docs/programs.md lists the sources):

* :func:`lare_messages` -- LaRe latent factors: ``evaluation_func(observation, action)`` returning a
  list of ``[B, 1]`` factors, answered as JSON with Understand / Analyze / Functions;
  :func:`lare_merge_messages` -- LaRe self-verification (merge n candidates into one function);
* :func:`reward_messages` -- dense reward code with named components, ``style="eureka"`` (output
  tips, reward reflection in later rounds) or ``style="text2reward"`` (a Pythonic abstraction of the
  observation, optional few-shot examples); :func:`reflection_message` -- Eureka's reward reflection;
* :func:`designer_messages`, :func:`critic_messages`, :func:`analyzer_messages` -- Auto MC-Reward's
  designer (dense and sparse parts), critic (review before any training) and trajectory analyzer;
* :func:`subgoal_messages`, :func:`subgoal_check_messages` -- CALM's subgoal decomposition and
  per-transition check;
* :func:`repair_message` -- the error fed back after a failed validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ResponseFormatError
from .spec import TaskSpec

__all__ = [
    "lare_messages",
    "lare_merge_messages",
    "reward_messages",
    "reflection_message",
    "designer_messages",
    "critic_messages",
    "analyzer_messages",
    "subgoal_messages",
    "subgoal_check_messages",
    "repair_message",
    "extract_code",
    "parse_json_answer",
]

Messages = list[dict[str, str]]

_CODE_RULES = """Rules for the code:
- Import only numpy (as np) and math. No file, network, process or system access, no printing.
- Use only the quantities described above; do not assume any other state of the environment.
- Work on whole batches with NumPy operations (no Python loop over rows). Compute every row from its
  own inputs only: no means, maxima or normalization across the batch.
- Keep every value finite: add a small constant before dividing or taking a logarithm, clip where needed.
- Be deterministic: no random numbers, no state kept between calls."""


def _task_block(spec: TaskSpec, *, next_obs: bool = False) -> str:
    parts = [f"Task ({spec.name}): {spec.goal}"]
    if spec.constraints:
        parts.append("Constraints:\n" + "\n".join(f"- {c}" for c in spec.constraints))
    if spec.episode:
        parts.append(f"Episodes: {spec.episode}")
    if spec.success:
        parts.append(f"Success: {spec.success}")
    parts.append(
        f"observation is a float array of shape [B, {spec.obs_dim}] (B steps, one per row):\n{spec.describe_observation()}"
    )
    if next_obs:
        parts.append("next_observation has the same layout and holds the observation after the action.")
    parts.append(f"action is a float array of shape [B, {spec.act_dim}]:\n{spec.describe_action()}")
    if spec.notes:
        parts.append(f"Notes: {spec.notes}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------- LaRe


def lare_messages(spec: TaskSpec) -> Messages:
    """LaRe's environment prompt: latent factors as code, answered as JSON.

    Example:
        >>> from creditlab.programs.spec import TaskSpec
        >>> spec = TaskSpec.from_dict({"name": "t", "goal": "reach the target",
        ...     "observation": [{"dims": "0-1", "name": "pos"}], "action": [{"dims": 0, "name": "force"}]})
        >>> msgs = lare_messages(spec)
        >>> [m["role"] for m in msgs], "evaluation_func" in msgs[1]["content"]
        (['system', 'user'], True)
    """
    system = (
        "You are an expert in reinforcement learning and reward design. You explain your reasoning briefly "
        "and write small, vectorized NumPy functions."
    )
    user = f"""{_task_block(spec)}

The agent only learns whether a whole episode went well. We want to explain that outcome by a few
latent factors measured at every step: quantities computed from one observation and one action that
make a step better or worse for the task (progress toward the goal, distances, speeds, effort, safety).

Answer with one JSON object with exactly these keys:
  "Understand": your understanding of the task, in a few sentences;
  "Analyze": step by step, which behaviours visible in the observation and action are good or bad for
             the task, and which dimensions show them;
  "Functions": a string holding Python code that defines
        def evaluation_func(observation, action):
            ...
            return [factor_1, factor_2, ...]
    where observation is [B, {spec.obs_dim}], action is [B, {spec.act_dim}], and each factor is a NumPy
    array of shape [B, 1] (use keepdims=True or reshape(-1, 1)).

Use few observation dimensions per factor and prefer generic, meaningful quantities over hand-tuned
scores. Write the factors, not their weighted sum: a learned model will combine them.

{_CODE_RULES}"""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def lare_merge_messages(spec: TaskSpec, candidates: Sequence[str]) -> Messages:
    """LaRe self-verification: show the n candidate answers and ask for one merged function."""
    if not candidates:
        raise ValueError("lare_merge_messages needs at least one candidate answer")
    shown = "\n\n".join(f"### Candidate {i + 1}\n{c.strip()}" for i, c in enumerate(candidates))
    user = f"""{_task_block(spec)}

Several answers were proposed for the factors of this task:

{shown}

Summarize the factors these candidates use, note which ones agree, and write one new
evaluation_func that includes every distinct useful factor from all candidates (without duplicates),
plus any other important factor you find missing. Answer with the same JSON object
("Understand", "Analyze", "Functions"); each factor is a [B, 1] array.

{_CODE_RULES}"""
    return lare_messages(spec)[:1] + [{"role": "user", "content": user}]


def repair_message(feedback: str) -> dict[str, str]:
    """The user turn sent after a candidate failed validation (LaRe/Eureka-style repair)."""
    return {
        "role": "user",
        "content": (
            "There is an error in your previous answer. Running or checking the code gave:\n"
            f"{feedback.strip()}\n\nFix the problem and answer again in the same format, with the complete code."
        ),
    }


# ---------------------------------------------------------------------- Text2Reward / Eureka


def _pythonic_abstraction(spec: TaskSpec) -> str:
    lines = ["class Observation:  # one row of `observation`"]
    for b in spec.observation:
        size = b.stop - b.start
        shape = "float" if size == 1 else f"np.ndarray  # shape ({size},)"
        lines.append(f"    {_ident(b.name)}: {shape}  # columns {b.start}:{b.stop}. {b.description}".rstrip())
    lines.append("class Action:  # one row of `action`")
    for b in spec.action:
        size = b.stop - b.start
        shape = "float" if size == 1 else f"np.ndarray  # shape ({size},)"
        lines.append(f"    {_ident(b.name)}: {shape}  # columns {b.start}:{b.stop}. {b.description}".rstrip())
    return "\n".join(lines)


def _ident(name: str) -> str:
    s = re.sub(r"\W+", "_", name.strip()).strip("_").lower() or "value"
    return s if not s[0].isdigit() else f"v_{s}"


def reward_messages(spec: TaskSpec, *, style: str = "eureka", examples: Sequence[str] = ()) -> Messages:
    """Dense reward code with named components (Eureka or Text2Reward flavour).

    The program defines ``compute_reward(observation, action, next_observation)`` returning
    ``(reward, components)``: ``reward`` float[B] and ``components`` a dict name -> float[B].
    """
    if style not in ("eureka", "text2reward"):
        raise ValueError(f"style must be 'eureka' or 'text2reward'; got {style!r}")
    system = (
        "You are a reward engineer. You write reward functions that help reinforcement-learning agents learn "
        "the task quickly, using only the variables you are given."
    )
    env = _task_block(spec, next_obs=True)
    if style == "text2reward":
        env += (
            "\n\nThe same layout as Python attributes (index the arrays by these columns):\n"
            + _pythonic_abstraction(spec)
        )
    shots = ""
    if examples:
        shots = "\n\nExamples of reward code for other tasks:\n" + "\n\n".join(
            f"```python\n{e.strip()}\n```" for e in examples
        )
    tips = """Tips:
- Return the total reward and each of its parts: `return reward, {"name": part, ...}` with float arrays of
  shape [B]. Name the parts after what they measure.
- Bring parts to comparable scales with bounded transforms such as np.exp(-distance / temperature); give
  each transform its own named temperature variable inside the function.
- Reward progress toward the goal at every step, not only success."""
    user = f"""{env}{shots}

Write a Python function
    def compute_reward(observation, action, next_observation):
        ...
        return reward, components
that gives a dense reward for each step of a batch (observation and next_observation are [B, {spec.obs_dim}],
action is [B, {spec.act_dim}]). Put the code in one ```python block.

{tips}

{_CODE_RULES}"""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def reflection_message(
    fitness: Sequence[float], components: Mapping[str, Sequence[float]], *, analysis: str = ""
) -> dict[str, str]:
    """Eureka's reward reflection: each component's and the fitness's values during training.

    Args:
        fitness: the task fitness (e.g. success rate or true return) at evenly spaced checkpoints.
        components: per reward component, its mean per step at the same checkpoints.
        analysis: optional text from the trajectory analyzer (Auto MC-Reward).
    """
    lines = ["We trained a policy with the reward function above. Values tracked during training:"]
    for name, vals in list(components.items()) + [("task fitness", fitness)]:
        v = np.asarray(list(vals), dtype=np.float64)
        if v.size == 0:
            continue
        pts = ", ".join(f"{x:.3g}" for x in _thin(v, 10))
        lines.append(f"- {name}: [{pts}]  max {v.max():.3g}, mean {v.mean():.3g}, min {v.min():.3g}")
    lines.append(
        "How to improve the reward:\n"
        "- If the task fitness stays near its starting value, the reward does not lead to the task: rewrite it.\n"
        "- If a component barely changes during training, rescale it, rewrite it or drop it.\n"
        "- If one component is much larger in magnitude than the others, rescale it.\n"
        "Analyze the values above, then write an improved compute_reward in one ```python block."
    )
    if analysis:
        lines.insert(-1, f"Analysis of failed episodes:\n{analysis.strip()}")
    return {"role": "user", "content": "\n".join(lines)}


def _thin(v: np.ndarray, k: int) -> np.ndarray:
    if v.size <= k:
        return v
    return v[np.linspace(0, v.size - 1, k).round().astype(int)]


# ---------------------------------------------------------------------- Auto MC-Reward


def designer_messages(spec: TaskSpec) -> Messages:
    """Auto MC-Reward designer: a sparse part (+/- events) and a dense part, combined by sign.

    The program returns components ``sparse`` and ``dense``; the total is
    ``sign(sparse) * 1 + sign(dense) * 0.1`` (the paper's combination), computed by the program.
    """
    msgs = reward_messages(spec, style="eureka")
    msgs[1]["content"] += """

Structure the reward in two parts:
- "sparse": nonzero only at important events (positive for reaching a subgoal or the goal, negative for
  failures such as falling or hitting a hazard);
- "dense": a small shaping term that is positive when the agent moves toward the next subgoal.
Return reward = np.sign(sparse) * 1.0 + np.sign(dense) * 0.1 and components {"sparse": sparse, "dense": dense}."""
    return msgs


def critic_messages(spec: TaskSpec, code: str) -> Messages:
    """Auto MC-Reward critic: review a reward program for consistency before any training.

    The answer is JSON ``{"ok": true|false, "issues": ["...", ...]}``.
    """
    user = f"""{_task_block(spec, next_obs=True)}

Review this reward function written for the task:
```python
{code.strip()}
```
Check: does it use the observation and action dimensions as described; can any term be undefined,
infinite or of the wrong shape; do the signs reward progress and penalize failure; is any part
inconsistent with the task or easy to exploit (rewarding a behaviour that does not solve the task)?
Answer with one JSON object: {{"ok": true or false, "issues": [short descriptions of real problems]}}.
Set "ok" to false only for problems that would make learning fail or reward the wrong behaviour."""
    return [
        {"role": "system", "content": "You are a careful reviewer of reward functions for reinforcement learning."},
        {"role": "user", "content": user},
    ]


def analyzer_messages(spec: TaskSpec, episodes: Sequence[Mapping[str, Any]]) -> Messages:
    """Auto MC-Reward trajectory analyzer: why did these episodes fail, and what should change?

    ``episodes`` are summaries (dicts) such as :func:`creditlab.programs.selection.summarize_episode`
    makes. The answer is JSON ``{"causes": [...], "suggestions": [...]}``.
    """
    shown = "\n".join(f"- episode {i}: {json.dumps(_jsonable(e), sort_keys=True)}" for i, e in enumerate(episodes))
    user = f"""{_task_block(spec)}

These episodes of the current policy failed the task:
{shown}

State the most likely causes of failure, as visible in the data (for example: stopped short of the
target, moved away from it, spent too much effort), and suggest concrete changes to the reward function.
Answer with one JSON object: {{"causes": ["..."], "suggestions": ["..."]}}."""
    return [
        {"role": "system", "content": "You analyze reinforcement-learning trajectories to find why an agent fails."},
        {"role": "user", "content": user},
    ]


# ---------------------------------------------------------------------- CALM


def subgoal_messages(spec: TaskSpec, *, max_subgoals: int = 6) -> Messages:
    """CALM step 1: decompose the task into elementary subgoals (JSON list)."""
    user = f"""{_task_block(spec)}

Decompose the task into at most {max_subgoals} elementary subgoals that an agent achieves in order,
each one recognizable from a single transition (observation, action, next observation).
Answer with one JSON object: {{"subgoals": [{{"name": "short_snake_case", "description": "..."}}, ...]}}."""
    return [
        {"role": "system", "content": "You decompose reinforcement-learning tasks into subgoals."},
        {"role": "user", "content": user},
    ]


def subgoal_check_messages(
    spec: TaskSpec, subgoals: Sequence[Mapping[str, str]], obs: Any, action: Any, next_obs: Any
) -> Messages:
    """CALM step 2: was any subgoal achieved in this transition? (JSON list of names)."""
    listed = "\n".join(f"- {g['name']}: {g.get('description', '')}" for g in subgoals)
    act_text = spec.describe_values(action, var="action")
    user = f"""{_task_block(spec)}

Subgoals:
{listed}

Transition:
  observation:      {spec.describe_values(obs)}
  action:           {act_text}
  next observation: {spec.describe_values(next_obs)}

Which subgoals were achieved by this transition (true in the next observation and not before)?
Answer with one JSON object: {{"achieved": [names of achieved subgoals, possibly empty]}}."""
    return [
        {"role": "system", "content": "You judge whether an agent achieved subgoals, from numbers only."},
        {"role": "user", "content": user},
    ]


# ---------------------------------------------------------------------- parsing answers

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def parse_json_answer(text: str) -> dict[str, Any]:
    """The JSON object in an answer (bare, or inside a ```json block, or the outermost {...}).

    Raises:
        ResponseFormatError: no JSON object could be read.
    """
    if not isinstance(text, str):
        raise ResponseFormatError(f"the answer must be text; got {type(text).__name__}")
    tries = [text.strip()]
    tries += [body for lang, body in _FENCE.findall(text) if lang.lower() in ("json", "")]
    lo, hi = text.find("{"), text.rfind("}")
    if 0 <= lo < hi:
        tries.append(text[lo : hi + 1])
    for t in tries:
        for candidate in (t, _escape_newlines_in_strings(t)):
            try:
                obj = json.loads(candidate)
            except (json.JSONDecodeError, ValueError):
                continue
            if isinstance(obj, dict):
                return obj
    raise ResponseFormatError("the answer holds no JSON object; answer with one JSON object as asked")


def _escape_newlines_in_strings(t: str) -> str:
    """Models often put raw newlines inside JSON strings (code); escape them."""
    out, in_str, esc = [], False, False
    for ch in t:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            elif ch == "\n":
                out.append("\\n")
                continue
            elif ch == "\t":
                out.append("\\t")
                continue
        elif ch == '"':
            in_str = True
        out.append(ch)
    return "".join(out)


def extract_code(text: str, entry: str) -> str:
    """The program in an answer: the JSON "Functions"/"code" field, a ```python block, or bare code.

    Picks the block that defines ``entry``; raises :class:`ResponseFormatError` when none does.

    Example:
        >>> extract_code('Sure:\\n```python\\ndef f(x):\\n    return x\\n```', "f")
        'def f(x):\\n    return x\\n'
    """
    if not isinstance(text, str):
        raise ResponseFormatError(f"the answer must be text; got {type(text).__name__}")
    pattern = re.compile(rf"^\s*def\s+{re.escape(entry)}\s*\(", re.MULTILINE)
    candidates: list[str] = []
    try:
        obj = parse_json_answer(text)
    except ResponseFormatError:
        obj = None
    if obj is not None:
        for key in ("Functions", "functions", "Function", "code", "Code"):
            val = obj.get(key)
            if isinstance(val, list):
                val = "\n\n".join(v for v in val if isinstance(v, str))
            if isinstance(val, str):
                candidates.append(_strip_fence(val))
    candidates += [body for lang, body in _FENCE.findall(text) if lang.lower() in ("python", "py", "python3", "")]
    start = re.search(r"^(import |from |def )", text, re.MULTILINE)
    if start:
        candidates.append(text[start.start() :])
    for c in candidates:
        if pattern.search(c):
            code = c.strip("\n") + "\n"
            return _dedent_block(code)
    raise ResponseFormatError(
        f"the answer holds no code defining {entry}(...); put the complete function in the answer"
    )


def _strip_fence(s: str) -> str:
    m = _FENCE.search(s)
    return m.group(2) if m else s


def _dedent_block(code: str) -> str:
    import textwrap

    return textwrap.dedent(code)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return np.round(x.astype(np.float64), 4).tolist()
    if isinstance(x, (np.floating, float)):
        return round(float(x), 4)
    if isinstance(x, np.integer):
        return int(x)
    return x
