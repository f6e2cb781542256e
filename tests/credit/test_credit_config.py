"""Assigner configuration: keywords or a frozen config object, named errors, registry defaults."""

import dataclasses

import numpy as np
import pytest

import creditlab as cl
from creditlab.credit import (
    IRCRAssigner,
    LaReConfig,
    RDAssigner,
    RRDAssigner,
    RRDConfig,
    RUDDERConfig,
    UniformAssigner,
)
from creditlab.errors import DtypeError, RangeError
from creditlab.integrations.sb3 import make_assigner
from creditlab.llm import SPAProgressEstimator

# credit assigners (exploration bonuses share the assigner interface but not these parameters: tests/exploration/test_exploration_bonuses.py)
ASSIGNERS = [m.name for m in cl.list_methods(kind="assigner") if m.family != "exploration"]


def test_every_assigner_is_registered_with_its_config_defaults():
    assert {"uniform", "ircr", "rd", "rrd", "rudder", "lare", "spa"} <= set(ASSIGNERS)
    for name in ASSIGNERS:
        cls = cl.get_method(name).factory
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        assert cl.get_method(name).params == defaults, name


@pytest.mark.parametrize("name", ASSIGNERS)
def test_keywords_and_config_object_give_the_same_config(name):
    cls = cl.get_method(name).factory
    assert cls(cls.Config(include_truncated=True)).config == cls(include_truncated=True).config
    # keywords override the config object's fields
    assert cls(cls.Config(include_truncated=True), include_truncated=False).config.include_truncated is False


def test_rrd_from_a_config_object():
    a = RRDAssigner(RRDConfig(subset_size=8))
    assert a.config.subset_size == 8 and a.config == RRDAssigner(subset_size=8).config
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.config.subset_size = 4  # frozen


@pytest.mark.parametrize("name", ASSIGNERS)
def test_unknown_keyword_is_a_range_error_naming_the_valid_ones(name):
    cls = cl.get_method(name).factory
    valid = [f.name for f in dataclasses.fields(cls.Config)]
    with pytest.raises(RangeError, match="has no parameter 'no_such_knob'") as exc:
        make_assigner(name, no_such_knob=1)
    for key in valid:
        assert repr(key) in str(exc.value)


def test_close_misspelling_is_suggested():
    with pytest.raises(RangeError, match="did you mean 'subset_size'"):
        RRDAssigner(subsetsize=8)


def test_a_config_of_another_method_is_refused():
    with pytest.raises(DtypeError, match="takes a RRDConfig"):
        RRDAssigner(LaReConfig())  # a LaReConfig is an RRDConfig subclass, but not RRD's config
    with pytest.raises(DtypeError, match="takes a RUDDERConfig"):
        cl.credit.RUDDERAssigner("rrd")


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: RRDAssigner(subset_size=0), RangeError, r"RRDConfig.subset_size must be >= 1; got 0"),
        (lambda: RRDAssigner(subset_size=2.5), DtypeError, r"RRDConfig.subset_size must be an integer; got 2.5"),
        (lambda: RDAssigner(lr=0.0), RangeError, r"RDConfig.lr must be > 0"),
        (lambda: RDAssigner(hidden=(8, 0)), RangeError, r"RDConfig.hidden must be sizes >= 1"),
        (lambda: RDAssigner(include_truncated="yes"), DtypeError, r"include_truncated must be True or False"),
        (lambda: IRCRAssigner(top_k=-1), RangeError, r"IRCRConfig.top_k must be >= 0"),
        (
            lambda: cl.credit.RUDDERAssigner(residual="first"),
            RangeError,
            r"RUDDERConfig.residual must be 'last', 'uniform' or None",
        ),
        (lambda: cl.credit.LaReAssigner(loss="mse"), RangeError, r"LaReConfig.loss must be 'rd' or 'rrd'"),
        (lambda: SPAProgressEstimator(hidden=-1), RangeError, r"SPAConfig.hidden must be >= 0"),
    ],
)
def test_bad_values_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_values_from_json_and_numpy_are_normalized():
    # the CLI parses --credit-set values as JSON (lists, ints); NumPy scalars come from sweeps
    a = RDAssigner(
        hidden=[16, np.int64(8)], batch_episodes=np.int32(2), lr=np.float32(0.5), include_truncated=np.bool_(True)
    )
    assert a.config.hidden == (16, 8) and type(a.config.batch_episodes) is int
    assert type(a.config.lr) is float and a.config.include_truncated is True
    assert RUDDERConfig(min_quality=None).min_quality is None


def test_spa_takes_feature_dim_by_position():
    assert SPAProgressEstimator(5, hidden=0).config.feature_dim == 5
    assert SPAProgressEstimator(feature_dim=5).model is not None  # built at once when D is known


@pytest.mark.parametrize("name", ASSIGNERS)
def test_shared_parameters_work_for_every_assigner(name):
    """The parameters every assigner shares are accepted by all of them (uniform and IRCR too)."""
    for value in (True, False):
        assert make_assigner(name, include_truncated=value).config.include_truncated is value


def test_uniform_accepts_include_truncated_and_still_credits_truncated_episodes():
    ep = cl.Episodes.from_lists([[0.0, 4.0], [0.0, 0.0, 3.0]]).replace(
        truncated=np.array([True, False]), terminated=np.array([False, True])
    )
    for value in (True, False):
        out = UniformAssigner(include_truncated=value).assign(ep)
        # R / T: [2, 2] and [1, 1, 1]; uniform keeps no memory, so the flag changes nothing
        np.testing.assert_allclose(out.rewards, [[2.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
