"""Multi-agent credit: split a team's episodic return across its agents and their steps.

**Layout: agents as episodes with a team id.** A batch of team episodes is an ordinary
:class:`~creditlab.episodes.Episodes` whose rows are (team episode, agent) pairs and whose
``group_ids`` say which rows are agents of the same team episode:

====================  ===================  =====================================================
field                 shape                meaning
====================  ===================  =====================================================
observations          float[B, T, obs]     o_{i,t}: agent i's own observation (row b = agent i
                                           of team episode g)
actions               [B, T, ...]          a_{i,t}: agent i's action
next_observations     float[B, T, obs]     o_{i,t+1} (optional; defaults to the shifted row)
rewards / outcomes    float[B, T] / [B]    the team's feedback as each agent received it
mask                  bool[B, T]           agent i's valid steps (T_i; usually T for all agents)
group_ids             int64[B]             the team episode g of each row (None: every row is
                                           its own team, i.e. single-agent credit)
====================  ===================  =====================================================

The **team return** R_g comes from the rows' returns (``outcomes``, else the sum of the
rows' rewards), as the config's ``team_return`` says: ``"shared"`` (default) -- every agent of
the team received the team's R_g (an outcome column repeating the team's score, or
:class:`~creditlab.integrations.pettingzoo.TeamReward` paying R_g to every agent), so the rows
must agree; ``"sum"`` -- the agents' returns add up to R_g (LaRe's sparse MPE setting pays
``R_g / N`` to each agent). Let ``L_g = sum_{i in g} T_i`` be the team's agent-steps. Every
assigner here returns per-agent, per-step rewards ``r_{i,t}`` (``rewards[B, T]``, row b =
agent i) meant to satisfy ``sum_{i in g} sum_t r_{i,t} ~ R_g``:

* ``team_uniform`` (:class:`TeamUniformAssigner`): ``r_{i,t} = R_g / L_g``; exact.
* ``team_rd`` (:class:`TeamRDAssigner`): one shared per-step model
  ``r_hat(o_i, a_i, o_i' - o_i)`` trained with ``L = mean_g ((sum_{i,t} r_hat_{i,t} - R_g) / L_g)^2``;
  the team residual ``(R_g - sum_{i,t} r_hat_{i,t}) / L_g`` is added to every step of every agent
  (``correct_residual``), so the team's credit sums to R_g exactly.
* ``team_rrd`` (:class:`TeamRRDAssigner`): the same model, trained on K (agent, step) pairs drawn
  from the team's L_g: ``L = mean_g (R_g / L_g - mean_K r_hat)^2`` (optionally bias-corrected).
* ``team_lare`` (:class:`TeamLaReAssigner`): LaRe's multi-agent variant (Qu et al., AAAI 2025;
  thu-rllab/LaRe ``mpe/``): latent factors ``z_{i,t} = phi(o_{i,t}, a_{i,t}, o_{i,t+1})`` per
  agent from a feature function (hand-written, or an LLM-written program), a shared decoder
  ``r_hat_{i,t} = g(z_{i,t})``, loss ``MSE(R_g, sum_i sum_t r_hat_{i,t})`` as in LaRe's
  ``make_train_step``. The target is the **team** return R_g (LaRe's code regresses agent 0's
  return in every mode, which in its sparse setting is the share R / N -- a constant factor that
  the training callback's reward scale absorbs; not copied).

**How it reuses the single-agent machinery.** A team episode is stored as one pooled episode of
L_g steps (its agents' steps, agent after agent) with return R_g. The RD loss of a pooled
episode is exactly the team loss above, the RRD loss draws (agent, step) pairs, the output bias
starts at the mean R_g / L_g, and a step's prediction depends only on that agent's own step: so
the team assigners are :class:`~creditlab.credit.decomposition.RDAssigner` /
``RRDAssigner`` / ``LaReAssigner`` with a different episode grouping
(:meth:`~creditlab.credit.learned.LearnedAssigner.store_targets`) and a team residual. LaRe's
``MSE(R, sum r_hat)`` equals our RD loss times ``L_g^2``, a constant for fixed-length MPE
episodes (Adam is invariant to a constant loss scale). Without ``group_ids`` every row is its own
team and each assigner equals its single-agent twin.

Example (two team episodes of 2 agents, team returns 6 and 1; team_uniform gives every agent-step R_g / L_g):
    >>> ep = Episodes.from_lists([[0, 0, 6.0], [0, 0, 6.0], [0, 1.0], [0, 1.0]], group_ids=[7, 7, 9, 9])
    >>> TeamUniformAssigner().assign(ep).rewards          # 6 / 6 steps, 1 / 4 steps
    array([[1.  , 1.  , 1.  ],
           [1.  , 1.  , 1.  ],
           [0.25, 0.25, 0.  ],
           [0.25, 0.25, 0.  ]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..episodes import Episodes
from ..errors import DataFormatError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method
from .base import AssignerConfig, StatelessAssigner, episode_arrays, reward_output
from .decomposition import LaReAssigner, LaReConfig, RDAssigner, RDConfig, RRDAssigner, RRDConfig
from .learned import STEP_NEEDS

__all__ = [
    "TeamArrays",
    "team_arrays",
    "team_uniform_rewards",
    "team_residual",
    "TeamConfig",
    "TeamUniformConfig",
    "TeamRDConfig",
    "TeamRRDConfig",
    "TeamLaReConfig",
    "TeamUniformAssigner",
    "TeamRDAssigner",
    "TeamRRDAssigner",
    "TeamLaReAssigner",
    "simple_spread_features",
]

TEAM_RETURNS = ("shared", "sum")
TEAM_NEEDS = ("group_ids?",)


# ------------------------------------------------------------------------------ team arrays (pure)


class TeamArrays(NamedTuple):
    """The team structure of a batch of (team episode, agent) rows.

    Attributes:
        team: int64[B] -- dense team index 0..G-1 of each row (teams in order of first appearance).
        order: int64[B] -- the rows sorted by team (stable: agents keep their order within a team).
        returns: float64[G] -- team return R_g (0 where unknown).
        has_return: bool[G] -- R_g is known (every row of the team has a return).
        lengths: int64[G] -- L_g, the team's agent-steps (sum of its rows' lengths).
        num_agents: int64[G] -- rows per team.
    """

    team: np.ndarray
    order: np.ndarray
    returns: np.ndarray
    has_return: np.ndarray
    lengths: np.ndarray
    num_agents: np.ndarray


def team_arrays(
    row_returns: Any,
    row_lengths: Any,
    group_ids: Any | None,
    *,
    team_return: str = "shared",
    has_return: Any | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> TeamArrays:
    """Group (team episode, agent) rows into teams and compute each team's return R_g.

    Args:
        row_returns: float[B] -- each row's return (outcome, else the sum of its rewards).
        row_lengths: int[B] -- each row's valid steps T_i.
        group_ids: int[B] -- the team episode of each row; None: every row is its own team.
        team_return: ``"shared"`` (every row carries R_g: rows must agree within ``rtol``/``atol``)
            or ``"sum"`` (R_g = sum of the rows' returns).
        has_return: bool[B] -- the row's return is known (default: all); rows of one team must agree.

    Returns:
        :class:`TeamArrays`.

    Raises:
        DataFormatError: rows of one team disagree on whether the return is known, or (``"shared"``)
            on its value.

    Example (rows 0 and 2 form team 5, row 1 is team 3; "sum" adds the agents' returns):
        >>> ta = team_arrays([1.0, 4.0, 2.0], [3, 2, 3], [5, 3, 5], team_return="sum")
        >>> ta.team.tolist(), ta.order.tolist(), ta.returns.tolist(), ta.lengths.tolist()
        ([0, 1, 0], [0, 2, 1], [3.0, 4.0], [6, 2])
    """
    r = np.asarray(row_returns, dtype=np.float64).reshape(-1)
    n = np.asarray(row_lengths, dtype=np.int64).reshape(-1)
    b = r.shape[0]
    if n.shape != (b,):
        raise ShapeError(f"row_lengths has {n.shape[0]} rows but row_returns has {b}")
    if team_return not in TEAM_RETURNS:
        raise DataFormatError(f"team_return must be one of {TEAM_RETURNS}; got {team_return!r}")
    has = np.ones(b, dtype=bool) if has_return is None else np.asarray(has_return, dtype=bool).reshape(-1)
    if group_ids is None:
        team = np.arange(b, dtype=np.int64)
    else:
        g = np.asarray(group_ids).reshape(-1)
        if g.shape != (b,):
            raise ShapeError(f"group_ids has {g.shape[0]} rows but the batch has {b}")
        _, first, inv = np.unique(g, return_index=True, return_inverse=True)
        rank = np.empty(first.shape[0], dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])  # teams in order of first appearance
        team = rank[inv.reshape(-1)]
    n_teams = int(team.max()) + 1 if b else 0
    order = np.argsort(team, kind="stable")
    counts = np.bincount(team, minlength=n_teams)
    known = np.bincount(team, weights=has.astype(np.float64), minlength=n_teams)
    mixed = (known > 0) & (known < counts)
    if mixed.any():
        bad = _row_of_team(team, int(np.nonzero(mixed)[0][0]), group_ids)
        raise DataFormatError(
            f"the rows of team {bad} disagree on whether the team's return is known (some have an outcome, some not); "
            "every agent of a team episode must carry the team's outcome, or none"
        )
    team_has = known == counts
    rr = np.where(has, r, 0.0)
    if team_return == "sum":
        returns = np.bincount(team, weights=rr, minlength=n_teams)
    else:
        lo = np.full(n_teams, np.inf)
        hi = np.full(n_teams, -np.inf)
        np.minimum.at(lo, team, np.where(has, r, np.inf))
        np.maximum.at(hi, team, np.where(has, r, -np.inf))
        returns = np.where(team_has, hi, 0.0)
        differ = team_has & (hi - lo > atol + rtol * np.maximum(np.abs(lo), np.abs(hi)))
        if differ.any():
            k = int(np.nonzero(differ)[0][0])
            raise DataFormatError(
                f"team_return='shared' but the agents of team {_row_of_team(team, k, group_ids)} received different returns "
                f"({lo[k]:g} .. {hi[k]:g}); with one team return paid to every agent they are equal. If each agent "
                "received a share (e.g. R / N) or its own reward, use team_return='sum'"
            )
    lengths = np.bincount(team, weights=n, minlength=n_teams).astype(np.int64)
    return TeamArrays(team, order, returns, team_has, lengths, counts.astype(np.int64))


def _row_of_team(team: np.ndarray, k: int, group_ids: Any | None) -> str:
    row = int(np.nonzero(team == k)[0][0])
    return f"group_id {np.asarray(group_ids).reshape(-1)[row].item()!r}" if group_ids is not None else f"(row {row})"


def team_uniform_rewards(
    returns: Any, mask: Any, group_ids: Any | None, *, team_return: str = "shared", has_return: Any | None = None
) -> RewardOutput:
    """Spread each team's return evenly over its agents' steps: ``r_{i,t} = R_g / L_g``.

    Args:
        returns: float[B] -- each row's return.
        mask: bool[B, T] -- valid steps of each row (agent).
        group_ids: int[B] -- the team episode of each row (None: single-agent uniform credit).
        team_return: ``"shared"`` or ``"sum"`` (see :func:`team_arrays`).
        has_return: bool[B] -- rows whose return is known (the others get 0, ``present`` False).

    Returns:
        RewardOutput(rewards float64[B, T] (0 on padding), metrics, present bool[B, T]).

    Example (one team of agents with 3 and 1 steps, R = 8 paid to each: 8 / 4 per agent-step):
        >>> team_uniform_rewards([8.0, 8.0], np.array([[1, 1, 1], [1, 0, 0]], bool), [0, 0]).rewards
        array([[2., 2., 2.],
               [2., 0., 0.]])
    """
    m = np.asarray(mask, dtype=bool)
    r = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or r.shape != (m.shape[0],):
        raise ShapeError(f"returns {r.shape} and mask {m.shape} must be [B] and [B, T]")
    ta = team_arrays(r, m.sum(1), group_ids, team_return=team_return, has_return=has_return)
    per = np.where(ta.has_return, ta.returns / np.maximum(ta.lengths, 1), 0.0)[ta.team]
    present = m & ta.has_return[ta.team][:, None]
    out = np.where(present, per[:, None], 0.0)
    return RewardOutput(
        out,
        {"credit/num_no_outcome": float((~ta.has_return).sum()), "credit/num_teams": float(ta.returns.shape[0])},
        present,
    )


def team_residual(rewards: Any, mask: Any, teams: TeamArrays) -> tuple[np.ndarray, np.ndarray]:
    """Add each team's residual ``(R_g - sum_{i in g, t} r_{i,t}) / L_g`` to every valid step of its agents.

    Args:
        rewards: float[B, T] -- per-agent, per-step predictions (row = agent of a team episode).
        mask: bool[B, T] -- valid steps.
        teams: the batch's :class:`TeamArrays`.

    Returns:
        ``(rewards float64[B, T], residual float64[G])``; teams whose return is unknown keep their
        predictions (residual 0). The corrected credit of a team sums to R_g exactly.

    Example (one team, predictions summing to 3 over 4 agent-steps, R = 7: residual 1 per step):
        >>> ta = team_arrays([7.0, 7.0], [2, 2], [0, 0])
        >>> team_residual(np.array([[1.0, 0.0], [2.0, 0.0]]), np.ones((2, 2), bool), ta)[0]
        array([[2., 1.],
               [3., 1.]])
    """
    x = np.asarray(rewards, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    sums = np.bincount(teams.team, weights=np.where(m, x, 0.0).sum(1), minlength=teams.returns.shape[0])
    resid = np.where(teams.has_return, (teams.returns - sums) / np.maximum(teams.lengths, 1), 0.0)
    return np.where(m, x + resid[teams.team][:, None], 0.0), resid


def _batch_teams(episodes: Episodes, team_return: str) -> TeamArrays:
    arr = episode_arrays(episodes)
    gid = episodes.group_ids
    if gid is not None and isinstance(gid, torch.Tensor):
        gid = gid.detach().cpu().numpy()
    return team_arrays(arr.returns, arr.lengths, gid, team_return=team_return, has_return=arr.has_return)


# ------------------------------------------------------------------------------ configs


@dataclass(frozen=True, kw_only=True)
class TeamConfig(AssignerConfig):
    """What every multi-agent assigner adds: how a team's return is read from its agents' rows."""

    team_return: str = "shared"
    """``"shared"``: every agent's row carries the team's return R (rows must agree; e.g.
    ``TeamReward(split=False)``); ``"sum"``: the agents' returns add up to R (``split=True``,
    or each agent's own reward)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("team_return", self.team_return in TEAM_RETURNS, "'shared' or 'sum'")


@dataclass(frozen=True, kw_only=True)
class TeamUniformConfig(TeamConfig):
    """Team-uniform redistribution has only the team parameter."""


@dataclass(frozen=True, kw_only=True)
class TeamRDConfig(RDConfig, TeamConfig):
    """Agent-wise RD: a shared MLP r_hat(o_i, a_i, o_i' - o_i), team residual on by default."""


@dataclass(frozen=True, kw_only=True)
class TeamRRDConfig(RRDConfig, TeamConfig):
    """Agent-wise RRD: K (agent, step) pairs drawn from each team episode."""


@dataclass(frozen=True, kw_only=True)
class TeamLaReConfig(LaReConfig, TeamConfig):
    """LaRe's multi-agent decoder (thu-rllab/LaRe ``mpe/``): defaults from its MPE code."""

    hidden: tuple[int, ...] = (64, 64, 64, 64)
    """Decoder hidden layers (LaRe's MPE decoder: 5 linear layers of width 64)."""
    loss: str = "rd"
    """``"rd"``: whole team episodes, LaRe's ``MSE(R, sum_i sum_t r_hat)`` up to the constant ``L_g^2``;
    ``"rrd"``: K (agent, step) pairs."""
    use_next_observations: bool = True
    """Factors of the next observation (LaRe's ``use_next_state``: MPE's reward follows the step)."""
    lr: float = 5e-4
    """Adam learning rate (LaRe's MPE code)."""
    weight_decay: float = 1e-5
    """Adam weight decay (LaRe's MPE code)."""


# ------------------------------------------------------------------------------ assigners


@register_method(
    "team_uniform",
    family="multiagent",
    kind="assigner",
    needs=("outcomes|rewards", *TEAM_NEEDS),
    summary="Team-uniform: every agent-step of a team episode gets R / (agents x steps)",
    source="baseline (uniform redistribution over agents and steps)",
)
class TeamUniformAssigner(StatelessAssigner):
    """Uniform redistribution of a team's return over its agents and steps (nothing is learned).

    ``r_{i,t} = R_g / L_g`` for every valid step of every agent of team episode g; rows of teams
    whose return is unknown get 0 with ``present`` False. Parameters: :class:`TeamUniformConfig`.

    Example (a team of 2 agents x 2 steps paid R = 4 each: 1 per agent-step; a lone row R = 3 over 3 steps):
        >>> ep = Episodes.from_lists([[0, 4.0], [0, 4.0], [1.0, 1.0, 1.0]], group_ids=[0, 0, 1])
        >>> TeamUniformAssigner().assign(ep).rewards
        array([[1., 1., 0.],
               [1., 1., 0.],
               [1., 1., 1.]])
    """

    Config = TeamUniformConfig
    name = "team_uniform"
    scope = "episode"

    def assign(self, episodes: Episodes) -> RewardOutput:
        arr = episode_arrays(episodes)
        gid = episodes.group_ids
        if gid is not None and isinstance(gid, torch.Tensor):
            gid = gid.detach().cpu().numpy()
        out = team_uniform_rewards(
            arr.returns, arr.mask, gid, team_return=self.config.team_return, has_return=arr.has_return
        )
        return reward_output(episodes, arr, out)


class _TeamPooled:
    """Mixin before a per-step reward model (RD, RRD, LaRe): team episodes are stored pooled (the
    agents' steps, agent after agent; length L_g, return R_g) and the residual is the team's."""

    config: Any

    def complete_rows(self, episodes: Episodes) -> tuple[np.ndarray, dict[str, float]]:
        """A team episode is complete only when every one of its rows is: one agent's row left out
        (truncated with ``include_truncated=False``, or no outcome) leaves the whole team out, so no
        team is stored with part of its agent-steps against its whole return. The skip counts are rows."""
        keep, metrics = super().complete_rows(episodes)  # type: ignore[misc]
        gid = episodes.group_ids
        if gid is None or keep.all():
            return keep, metrics
        if isinstance(gid, torch.Tensor):
            gid = gid.detach().cpu().numpy()
        _, team = np.unique(np.asarray(gid), return_inverse=True)
        whole = np.ones(int(team.max()) + 1, dtype=bool)
        np.logical_and.at(whole, team, keep)
        keep_teams = whole[team]
        if (keep_teams != keep).any():
            metrics = {**metrics, "store/skipped_partial_team": float((keep & ~keep_teams).sum())}
        return keep_teams, metrics

    def complete(self, episodes: Episodes) -> tuple[Episodes | None, dict[str, float]]:
        teams = _batch_teams(episodes, self.config.team_return)  # checks the team structure of the whole batch
        sub, metrics = super().complete(episodes)  # type: ignore[misc]
        if sub is None:
            return None, metrics
        if sub.num_episodes != episodes.num_episodes:  # whole teams were left out (complete_rows)
            teams = _batch_teams(sub, self.config.team_return)
        return sub.select(teams.order), metrics

    def store_targets(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
        """One stored episode per team: ``(L_g, R_g)``; the rows arrive sorted by team (:meth:`complete`)."""
        teams = _batch_teams(episodes, self.config.team_return)
        return teams.lengths, teams.returns

    def credit(self, episodes: Episodes, metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``r_hat`` of every agent-step, plus the team residual ``(R_g - sum r_hat) / L_g`` where
        ``correct_residual`` and R_g is known."""
        rewards, mask = self.step_predictions(episodes, metrics)  # type: ignore[attr-defined]
        teams = _batch_teams(episodes, self.config.team_return)
        metrics["credit/num_teams"] = float(teams.returns.shape[0])
        if self.config.correct_residual:
            rewards, resid = team_residual(rewards, mask, teams)
            metrics["credit/residual_abs_mean"] = (
                float(np.abs(resid[teams.has_return]).mean()) if teams.has_return.any() else 0.0
            )
        return rewards, mask


_TEAM_STEP_NEEDS = (*STEP_NEEDS, *TEAM_NEEDS)


@register_method(
    "team_rd",
    family="multiagent",
    kind="assigner",
    needs=_TEAM_STEP_NEEDS,
    summary="Agent-wise RD: shared MLP r(o_i, a_i, o_i'-o_i) whose sum over agents and steps matches the team return (residual-corrected)",
    source="full-trajectory decomposition baseline (RRD/LaRe papers), pooled over agents and time",
)
class TeamRDAssigner(_TeamPooled, RDAssigner):
    """Agent-wise return decomposition: a per-agent, per-step model whose team sum matches R_g.

    One shared MLP ``r_hat(o_i, a_i, o_i' - o_i)``; loss ``mean_g ((sum_{i,t} r_hat - R_g) / L_g)^2``
    on whole stored team episodes; the team residual is added to every agent-step
    (``correct_residual=True``), so ``sum_{i in g} sum_t r_{i,t} = R_g`` exactly. Parameters:
    :class:`TeamRDConfig` (:class:`~creditlab.credit.RDConfig` plus ``team_return``).

    Example (4 teams of 2 agents; the hidden per-agent reward is the first observation):
        >>> rng = np.random.default_rng(0)
        >>> obs = rng.normal(size=(8, 5, 2)).astype(np.float32)
        >>> team = np.repeat(np.arange(4), 2)
        >>> R = np.bincount(team, weights=obs[..., 0].sum(1))[team]      # the team's return, on each agent's row
        >>> ep = Episodes.from_padded(np.zeros((8, 5)), observations=obs, actions=np.zeros((8, 5, 1)), outcomes=R,
        ...                           group_ids=team)
        >>> rd = TeamRDAssigner(seed=0)
        >>> _ = rd.fit(ep, num_updates=5)
        >>> out = rd.assign(ep).rewards
        >>> bool(np.allclose(np.bincount(team, weights=out.sum(1)), R[::2], atol=1e-4))   # team sums are exact
        True
    """

    Config = TeamRDConfig
    name = "team_rd"


@register_method(
    "team_rrd",
    family="multiagent",
    kind="assigner",
    needs=_TEAM_STEP_NEEDS,
    summary="Agent-wise RRD: shared MLP r(o_i, a_i, o_i'-o_i), K (agent, step) pairs per team episode",
    source="Ren et al. 2022 (arXiv 2111.13485) over agents and time",
)
class TeamRRDAssigner(_TeamPooled, RRDAssigner):
    """Agent-wise randomized return decomposition.

    The RRD loss on each stored team episode, with the K drawn steps being (agent, step) pairs of
    the team's L_g: ``mean_g (R_g / L_g - mean_K r_hat)^2`` (``bias_correction`` as in RRD). Assigns
    the raw predictions (``correct_residual=False``, as RRD). Parameters: :class:`TeamRRDConfig`.

    Example:
        >>> obs = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
        >>> ep = Episodes.from_padded(np.zeros((6, 4)), observations=obs, actions=np.zeros((6, 4, 1)),
        ...                           outcomes=np.repeat([1.0, 2.0, 3.0], 2), group_ids=[0, 0, 1, 1, 2, 2])
        >>> rrd = TeamRRDAssigner(subset_size=4, seed=0)
        >>> m = rrd.fit(ep, num_updates=2)
        >>> m["store/episodes"], m["store/steps"]          # 3 team episodes of 2 agents x 4 steps
        (3.0, 24.0)
    """

    Config = TeamRRDConfig
    name = "team_rrd"


@register_method(
    "team_lare",
    family="multiagent",
    kind="assigner",
    needs=_TEAM_STEP_NEEDS,
    summary="LaRe multi-agent: shared decoder on per-agent latent factors phi(o_i, a_i, o_i'), team-return loss",
    source="Qu et al. 2025, arXiv 2412.11120 (thu-rllab/LaRe mpe/)",
)
class TeamLaReAssigner(_TeamPooled, LaReAssigner):
    """LaRe's multi-agent latent reward: ``r_hat_{i,t} = g(phi(o_{i,t}, a_{i,t}, o_{i,t+1}))``.

    ``phi`` is any feature function applied to each agent's own step (see
    :mod:`creditlab.credit.features`; for MPE simple_spread the hand-written
    :func:`simple_spread_features`, given as ``features="creditlab.credit.multiagent:simple_spread_features"``).
    The decoder is trained on whole team episodes against the team return (``loss="rd"``, LaRe's
    ``MSE(R, sum_i sum_t r_hat)`` up to a constant) and assigns the raw per-agent predictions.
    Defaults from LaRe's MPE code: decoder 5 x 64, Adam 5e-4 with weight decay 1e-5, next-state
    factors. Without ``features`` the decoder reads the raw step (agent-wise RD on raw inputs).
    Parameters: :class:`TeamLaReConfig`.

    Example:
        >>> obs = np.random.default_rng(0).normal(size=(4, 5, 18)).astype(np.float32)     # 2 teams of 2 agents
        >>> ep = Episodes.from_padded(np.zeros((4, 5)), observations=obs, actions=np.zeros((4, 5), np.int64),
        ...                           outcomes=[1.0, 1.0, 2.0, 2.0], group_ids=[0, 0, 1, 1])
        >>> lare = TeamLaReAssigner(features=simple_spread_features, num_actions=5)
        >>> _ = lare.fit(ep, num_updates=2)
        >>> lare.assign(ep).metrics["credit/num_factors"]
        3.0
    """

    Config = TeamLaReConfig
    name = "team_lare"


# ------------------------------------------------------------------------------ hand-written factors


AGENT_SIZE = 0.15
"""Agent radius in MPE simple_spread (``Scenario.make_world``); two agents collide below 2 x this distance."""


def simple_spread_features(
    observations: np.ndarray, actions: np.ndarray, next_observations: np.ndarray
) -> list[np.ndarray]:
    """Hand-written latent factors for MPE cooperative navigation (``mpe2.simple_spread_v3``, full observability).

    Written by hand for the benchmark, standing in for LaRe's LLM-written ``evaluation_func``.
    An agent's observation is ``[vel(2), pos(2), landmarks relative to self (2N), other agents
    relative to self (2(N-1)), communication (2(N-1))]``, 6N values, so N is read from its size.
    From the *next* observation (the reward follows the step):

    * ``coverage``: ``sum_l min_j |p_j - p_l|`` over landmarks l and all agents j (self and the
      others, whose landmark offsets are ``(l - self) - (j - self)``): the team's distance to
      covering every landmark;
    * ``collisions``: the number of other agents closer than ``2 x 0.15`` (agent radius);
    * ``nearest``: the agent's own distance to its nearest landmark.

    simple_spread pays agent i ``local_ratio * (-collisions_i) + (1 - local_ratio) * (-coverage)``,
    so these factors contain the true reward exactly (a linear decoder suffices).

    Example (N = 2: self at a landmark, the other agent 0.2 away from self and 1.0 from the other landmark):
        >>> o = np.array([[0, 0, 0, 0, 0.0, 0.0, 1.0, 0.0, 0.2, 0.0, 0, 0]], np.float32)
        >>> [float(np.round(f[0], 4)) for f in simple_spread_features(o, np.zeros((1, 5), np.float32), o)]
        [0.8, 1.0, 0.0]
    """
    o = np.asarray(next_observations, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] % 6 or o.shape[1] == 0:
        raise ShapeError(
            f"simple_spread_features: observations of simple_spread have 6N values (N agents); got shape {o.shape}"
        )
    n = o.shape[1] // 6
    lm = o[:, 4 : 4 + 2 * n].reshape(o.shape[0], n, 2)  # landmark l relative to self
    others = o[:, 4 + 2 * n : 4 + 2 * n + 2 * (n - 1)].reshape(o.shape[0], n - 1, 2)  # agent j relative to self
    d_self = np.linalg.norm(lm, axis=2)  # [M, n]
    d_min = d_self
    if n > 1:
        d_others = np.linalg.norm(lm[:, None, :, :] - others[:, :, None, :], axis=3)  # [M, n-1, n]
        d_min = np.minimum(d_self, d_others.min(axis=1))
    coverage = d_min.sum(axis=1)
    collisions = (np.linalg.norm(others, axis=2) < 2 * AGENT_SIZE).sum(axis=1).astype(np.float64)
    return [coverage, collisions, d_self.min(axis=1)]


simple_spread_features.needs_next_observations = True  # type: ignore[attr-defined]
