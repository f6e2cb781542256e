"""Use a program: as a LaRe feature function, or as a dense reward for Gymnasium / SB3 environments.

Everything here runs the program through a :class:`~creditlab.programs.sandbox.SandboxedProgram`
(a persistent worker process, batched NumPy transfer), never in the caller's process.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..credit.features import FeatureValueWarning
from ..errors import RangeError, ShapeError
from .errors import ProgramError
from .program import Program, load_program
from .sandbox import SandboxConfig, SandboxedProgram

__all__ = ["SandboxedFeatures", "lare_features", "SandboxedReward", "DenseRewardWrapper", "DenseRewardVecEnvWrapper"]  # noqa: F822


def _as_program(program: Program | str, kind: str) -> Program:
    prog = load_program(program) if not isinstance(program, Program) else program
    if prog.kind != kind:
        raise RangeError(f"expected a {kind!r} program; got a {prog.kind!r} program ({prog.entry})")
    return prog


def _to_numpy(x: Any, name: str) -> tuple[np.ndarray, Any]:
    """float64 NumPy view of x, and the torch device to return to (None for NumPy input)."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float64).numpy(), x.device
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ShapeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False), None


class SandboxedFeatures:
    """LaRe's encoder phi(s, a) backed by a sandboxed ``evaluation_func``: a batched callable.

    ``features(obs, act)`` maps ``obs: float[..., obs_dim]`` and ``act: float[..., act_dim]`` (or
    integer ``[...]`` for discrete actions) to ``float[..., d]``, the concatenated factors. The
    batch is sent to the worker in chunks of ``chunk_rows`` rows. NumPy in, NumPy out; torch in,
    torch out (same device, float32 unless the input was float64).

    ``state`` chooses which observation the factors describe (LaRe's ``use_next_state`` option):
    ``"current"`` -- phi(s_t, a_t), the MuJoCo default; ``"next"`` -- phi(s_{t+1}, a_t), so the
    factors show the effect of the action; ``"both"`` -- the two side by side (2d factors). With
    ``"next"``/``"both"`` the callable takes ``(obs, act, next_obs)`` and sets
    ``needs_next_observations = True``, which :class:`creditlab.credit.LaReAssigner` honours.

    Non-finite factor values (the program's NaN/inf on inputs the probe batch did not cover) are
    replaced by 0 (NaN) or +/-``clip`` (inf) and finite values are clipped to ``[-clip, clip]``
    (LaRe's ``nan_to_num`` guard); ``metrics['features/nonfinite']`` and ``metrics['features/clipped']``
    count them in the last call, and the first call that changes any value warns once
    (:class:`~creditlab.credit.features.FeatureValueWarning`).

    Raises:
        ProgramError: the program failed (timeout, limit, exception, wrong shape) on a batch.
    """

    def __init__(
        self,
        program: Program,
        *,
        config: SandboxConfig | None = None,
        chunk_rows: int = 65536,
        clip: float = 1e6,
        state: str = "current",
    ) -> None:
        if chunk_rows < 1:
            raise RangeError(f"chunk_rows must be >= 1; got {chunk_rows}")
        if state not in ("current", "next", "both"):
            raise RangeError(f"state must be 'current', 'next' or 'both'; got {state!r}")
        self.program = program
        self.sandbox = SandboxedProgram(program.code, entry=program.entry, mode="factors", config=config)
        self.chunk_rows = int(chunk_rows)
        self.clip = float(clip)
        self.state = state
        self.needs_next_observations = state != "current"
        self.dim: int | None = program.num_factors
        self.obs_dim = program.obs_dim
        self.act_dim = program.act_dim
        self.metrics: dict[str, float] = {}
        self._warned = False
        self.__name__ = f"sandboxed:{program.sha256[:12]}"

    def start(self) -> SandboxedFeatures:
        self.sandbox.start()
        return self

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> SandboxedFeatures:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __call__(self, obs: Any, act: Any, next_obs: Any = None) -> Any:
        o, device = _to_numpy(obs, "obs")
        a, _ = _to_numpy(act, "act")
        if o.ndim < 2:
            raise ShapeError(f"obs must be float[..., obs_dim] (at least 2-D); got shape {o.shape}")
        lead = o.shape[:-1]
        if a.shape == lead:  # discrete actions without a trailing axis
            a = a[..., None]
        if a.shape[:-1] != lead:
            raise ShapeError(f"act has shape {a.shape}; expected leading dims {lead} matching obs {o.shape}")
        if self.obs_dim is not None and o.shape[-1] != self.obs_dim:
            raise ShapeError(f"obs has {o.shape[-1]} columns; the program was validated with obs_dim {self.obs_dim}")
        if self.act_dim is not None and a.shape[-1] != self.act_dim:
            raise ShapeError(f"act has {a.shape[-1]} columns; the program was validated with act_dim {self.act_dim}")
        o2 = o.reshape(-1, o.shape[-1])
        a2 = a.reshape(-1, a.shape[-1])
        if self.state != "current":
            if next_obs is None:
                raise ShapeError(f"state={self.state!r} needs next_obs (float[..., obs_dim]) as the third argument")
            no, _ = _to_numpy(next_obs, "next_obs")
            if no.shape != o.shape:
                raise ShapeError(f"next_obs has shape {no.shape}; expected the shape of obs {o.shape}")
            no2 = no.reshape(o2.shape)
        parts = []
        if self.state in ("current", "both"):
            parts.append(self._phi(o2, a2))
        if self.state in ("next", "both"):
            parts.append(self._phi(no2, a2))
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        bad = ~np.isfinite(feats)
        n_bad = int(bad.sum())
        if n_bad:
            feats = np.nan_to_num(feats, nan=0.0, posinf=self.clip, neginf=-self.clip)
        n_clip = int((np.abs(feats) > self.clip).sum())
        np.clip(feats, -self.clip, self.clip, out=feats)
        self.metrics = {
            "features/nonfinite": float(n_bad),
            "features/clipped": float(n_clip),
            "features/rows": float(o2.shape[0]),
        }
        if (n_bad or n_clip) and not self._warned:
            self._warned = True
            warnings.warn(
                f"program {self.__name__}: {n_bad} non-finite factor value(s) replaced and {n_clip} value(s) beyond "
                f"+/-{self.clip:g} clipped in a batch of {o2.shape[0]} rows (metrics features/nonfinite and "
                "features/clipped; warned once)",
                FeatureValueWarning,
                stacklevel=2,
            )
        feats = feats.reshape(*lead, feats.shape[-1])
        if device is not None:
            import torch

            dtype = torch.float64 if getattr(obs, "dtype", None) == torch.float64 else torch.float32
            return torch.as_tensor(feats, dtype=dtype, device=device)
        return feats

    def _phi(self, o2: np.ndarray, a2: np.ndarray) -> np.ndarray:
        n = o2.shape[0]
        pieces = []
        max_d = self.dim if self.dim is not None else 256
        for s in range(0, n, self.chunk_rows):
            e = min(n, s + self.chunk_rows)
            out = self.sandbox.call(o2[s:e], a2[s:e], max_output_bytes=(e - s) * (max_d + 1) * 8 + 4096)
            pieces.append(self._stack(out.outputs, e - s))
        return np.concatenate(pieces, axis=0) if pieces else np.zeros((0, self.dim or 0))

    def _stack(self, outputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
        cols = []
        for name, arr in outputs.items():
            if arr.shape not in ((rows, 1), (rows,)):
                raise ProgramError("invalid", f"{name} has shape {arr.shape}; expected ({rows}, 1)")
            cols.append(arr.reshape(rows, 1))
        if not cols:
            raise ProgramError("invalid", "evaluation_func returned no factor")
        feats = np.concatenate(cols, axis=1)
        if self.dim is None:
            self.dim = feats.shape[1]
        elif feats.shape[1] != self.dim:
            raise ProgramError("invalid", f"evaluation_func returned {feats.shape[1]} factors; expected {self.dim}")
        return feats


def lare_features(
    program: Program | str, *, config: SandboxConfig | None = None, chunk_rows: int = 65536, state: str = "current"
) -> SandboxedFeatures:
    """Load a ``factors`` program (object or saved path) as LaRe's feature function phi(obs, act) -> float[..., d].

    ``state``: ``"current"`` (phi(s_t, a_t)), ``"next"`` (phi(s_{t+1}, a_t)) or ``"both"``; see
    :class:`SandboxedFeatures`.

    The worker starts immediately (so load errors surface here); close it with ``.close()`` or a
    ``with`` block.
    """
    return SandboxedFeatures(_as_program(program, "factors"), config=config, chunk_rows=chunk_rows, state=state).start()


class SandboxedReward:
    """A ``reward`` program as a batched callable: ``(obs[N, o], act[N, a], next_obs[N, o]) -> (reward[N], {name: [N]})``.

    Non-finite rewards become 0 (counted in ``metrics['reward/nonfinite']``).
    """

    def __init__(self, program: Program | str, *, config: SandboxConfig | None = None) -> None:
        self.program = _as_program(program, "reward")
        self.sandbox = SandboxedProgram(self.program.code, entry=self.program.entry, mode="reward", config=config)
        self.metrics: dict[str, float] = {}

    def start(self) -> SandboxedReward:
        self.sandbox.start()
        return self

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> SandboxedReward:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __call__(self, obs: Any, act: Any, next_obs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        o, _ = _to_numpy(obs, "obs")
        a, _ = _to_numpy(act, "act")
        no, _ = _to_numpy(next_obs, "next_obs")
        if o.ndim != 2 or no.shape != o.shape:
            raise ShapeError(f"obs and next_obs must both be float[N, obs_dim]; got {o.shape} and {no.shape}")
        n = o.shape[0]
        if a.shape == (n,):
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] != n:
            raise ShapeError(f"act must be float[N, act_dim] with N = {n}; got shape {a.shape}")
        out = self.sandbox.call(o, a, no, max_output_bytes=n * 66 * 8 + 4096)
        total = None
        comps: dict[str, np.ndarray] = {}
        for name, arr in out.outputs.items():
            if arr.shape not in ((n,), (n, 1)):
                raise ProgramError("invalid", f"{name} has shape {arr.shape}; expected ({n},)")
            if name == "reward":
                total = arr.reshape(n)
            else:
                comps[name[len("component:") :]] = arr.reshape(n)
        if total is None:
            raise ProgramError("invalid", "compute_reward returned no reward")
        bad = ~np.isfinite(total)
        self.metrics = {"reward/nonfinite": float(bad.sum())}
        if bad.any():
            total = np.where(bad, 0.0, total)
        comps = {k: np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in comps.items()}
        return total, comps


def _flat(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """The wrappers subclass gymnasium / SB3 classes, built on first use (they are optional imports)."""
    if name == "DenseRewardWrapper":
        if name not in _CLASSES:
            _CLASSES[name] = _make_dense_reward_wrapper()
        return _CLASSES[name]
    if name == "DenseRewardVecEnvWrapper":
        if name not in _CLASSES:
            _CLASSES[name] = _make_vec_wrapper()
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_dense_reward_wrapper() -> type:
    try:
        import gymnasium as gym
    except ImportError as exc:  # pragma: no cover - gymnasium is in the rl extra
        raise ImportError("DenseRewardWrapper needs gymnasium: pip install 'creditlab[rl]'") from exc

    class DenseRewardWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
        """Gymnasium wrapper that replaces (or adds to) the reward with a sandboxed ``compute_reward``.

        Args:
            env: a Gymnasium env with flat Box observations (and Box or Discrete actions).
            program: a ``reward`` :class:`Program` or a saved program path.
            mode: ``replace`` (the program's reward is the reward) or ``add`` (env reward + weight * program reward).
            weight: scale of the program's reward.
            config: sandbox limits.

        ``terminated``/``truncated`` pass through unchanged; ``info`` gets ``original_reward``,
        ``program_reward`` and ``reward_components`` (a dict name -> float). One sandbox call per
        step; for vectorized training use ``DenseRewardVecEnvWrapper``, which batches over envs.
        """

        def __init__(
            self,
            env: Any,
            program: Program | str,
            *,
            mode: str = "replace",
            weight: float = 1.0,
            config: SandboxConfig | None = None,
        ) -> None:
            if mode not in ("replace", "add"):
                raise RangeError(f"mode must be 'replace' or 'add'; got {mode!r}")
            gym.utils.RecordConstructorArgs.__init__(
                self, program=program if isinstance(program, str) else "<Program>", mode=mode, weight=weight
            )
            gym.Wrapper.__init__(self, env)
            self.reward_fn = SandboxedReward(program, config=config).start()
            self.mode = mode
            self.weight = float(weight)
            self._last_obs: np.ndarray | None = None

        def reset(self, **kwargs: Any):
            obs, info = self.env.reset(**kwargs)
            self._last_obs = _flat(obs)
            return obs, info

        def step(self, action: Any):
            obs, reward, terminated, truncated, info = self.env.step(action)
            nxt = _flat(obs)
            prev = self._last_obs if self._last_obs is not None else nxt
            total, comps = self.reward_fn(prev[None], _flat(action)[None], nxt[None])
            r = float(total[0]) * self.weight
            info = dict(info)
            info["original_reward"] = float(reward)
            info["program_reward"] = float(total[0])
            info["reward_components"] = {k: float(v[0]) for k, v in comps.items()}
            self._last_obs = nxt
            return obs, (r if self.mode == "replace" else float(reward) + r), terminated, truncated, info

        def close(self) -> None:
            self.reward_fn.close()
            super().close()

    DenseRewardWrapper.__module__ = __name__
    return DenseRewardWrapper


def _make_vec_wrapper() -> type:
    try:
        from stable_baselines3.common.vec_env import VecEnvWrapper
    except ImportError as exc:  # pragma: no cover - stable-baselines3 is in the rl extra
        raise ImportError("DenseRewardVecEnvWrapper needs stable-baselines3: pip install 'creditlab[rl]'") from exc

    class DenseRewardVecEnvWrapper(VecEnvWrapper):
        """SB3 ``VecEnv`` wrapper: one sandboxed ``compute_reward`` call per vectorized step (all envs at once).

        Uses ``infos[i]['terminal_observation']`` as the next observation of an env that just ended
        (SB3 resets it automatically). Each info gets ``original_reward``, ``program_reward`` and
        ``reward_components``; :attr:`component_sums` accumulates per-component sums and
        :attr:`steps` the number of env steps, for Eureka-style statistics.
        """

        def __init__(
            self,
            venv: Any,
            program: Program | str,
            *,
            mode: str = "replace",
            weight: float = 1.0,
            config: SandboxConfig | None = None,
        ) -> None:
            if mode not in ("replace", "add"):
                raise RangeError(f"mode must be 'replace' or 'add'; got {mode!r}")
            super().__init__(venv)
            self.reward_fn = SandboxedReward(program, config=config).start()
            self.mode = mode
            self.weight = float(weight)
            self._last_obs: np.ndarray | None = None
            self._actions: np.ndarray | None = None
            self.component_sums: dict[str, float] = {}
            self.reward_sum = 0.0
            self.steps = 0

        def reset(self):
            obs = self.venv.reset()
            self._last_obs = np.asarray(obs, dtype=np.float64).reshape(self.num_envs, -1)
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = np.asarray(actions)
            self.venv.step_async(actions)

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            nxt = np.asarray(obs, dtype=np.float64).reshape(self.num_envs, -1).copy()
            for i, done in enumerate(dones):
                if done and infos[i].get("terminal_observation") is not None:
                    nxt[i] = np.asarray(infos[i]["terminal_observation"], dtype=np.float64).reshape(-1)
            prev = self._last_obs if self._last_obs is not None else nxt
            acts = np.asarray(self._actions, dtype=np.float64).reshape(self.num_envs, -1)
            total, comps = self.reward_fn(prev, acts, nxt)
            self._last_obs = np.asarray(obs, dtype=np.float64).reshape(self.num_envs, -1)
            base = np.asarray(rewards, dtype=np.float64)
            new = total * self.weight if self.mode == "replace" else base + total * self.weight
            for i in range(self.num_envs):
                infos[i]["original_reward"] = float(base[i])
                infos[i]["program_reward"] = float(total[i])
                infos[i]["reward_components"] = {k: float(v[i]) for k, v in comps.items()}
            for k, v in comps.items():
                self.component_sums[k] = self.component_sums.get(k, 0.0) + float(v.sum())
            self.reward_sum += float(total.sum())
            self.steps += self.num_envs
            return obs, new.astype(np.float32), dones, infos

        def close(self) -> None:
            self.reward_fn.close()
            self.venv.close()

    DenseRewardVecEnvWrapper.__module__ = __name__
    return DenseRewardVecEnvWrapper
