"""Returns, GAE, lambda-returns, Monte Carlo: hand-computed cases and properties."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import creditlab as cl
from tests.helpers.reference import gae_loop, returns_loop
from tests.helpers.strategies import padded_batches

# ------------------------------------------------------------------------------ tier 1


def test_returns_one_reward_at_last_step_gamma_01():
    # r = [0, 0, 1], gamma = 0.1: G_2 = 1, G_1 = 0 + 0.1 * 1 = 0.1, G_0 = 0.1 * 0.1 = 0.01
    out = cl.discounted_returns(np.array([[0.0, 0.0, 1.0]]), gamma=0.1, terminated=[True])
    np.testing.assert_allclose(out, [[0.01, 0.1, 1.0]])


def test_returns_truncation_bootstraps_termination_does_not():
    r = np.array([[1.0, 1.0], [1.0, 1.0]])
    # both episodes: bootstrap V(s_2) = 10, gamma = 0.1
    # row 0 terminated: G_1 = 1, G_0 = 1 + 0.1 * 1 = 1.1
    # row 1 truncated:  G_1 = 1 + 0.1 * 10 = 2, G_0 = 1 + 0.1 * 2 = 1.2
    out = cl.discounted_returns(r, gamma=0.1, terminated=[True, False], bootstrap_value=[10.0, 10.0])
    np.testing.assert_allclose(out, [[1.1, 1.0], [1.2, 2.0]])


def test_returns_padding_is_zero_and_ignored():
    r = np.array([[1.0, 2.0, 99.0]])
    m = np.array([[1, 1, 0]])
    # padding reward 99 ignored: G_1 = 2, G_0 = 1 + 1 * 2 = 3
    out = cl.discounted_returns(r, gamma=1.0, mask=m)
    np.testing.assert_allclose(out, [[3.0, 2.0, 0.0]])


def test_gae_constant_values_last_step_reward():
    # r = [0, 0, 1], V = 0.5 everywhere, terminated, gamma = lambda = 1.
    # deltas: d0 = 0 + 0.5 - 0.5 = 0, d1 = 0, d2 = 1 + 0 - 0.5 = 0.5 -> A = [0.5, 0.5, 0.5]
    out = cl.gae(np.array([[0.0, 0.0, 1.0]]), np.full((1, 3), 0.5), gamma=1.0, lambda_=1.0, terminated=[True])
    np.testing.assert_allclose(out.advantages, [[0.5, 0.5, 0.5]])
    np.testing.assert_allclose(out.returns, [[1.0, 1.0, 1.0]])


def test_gae_gamma_01_lambda_05_truncated():
    # r = [1, 1], V = [1, 2], bootstrap V(s_2) = 10, gamma = 0.1, lambda = 0.5, truncated.
    # d1 = 1 + 0.1 * 10 - 2 = 0 ; d0 = 1 + 0.1 * 2 - 1 = 0.2
    # A1 = 0 ; A0 = 0.2 + 0.1 * 0.5 * 0 = 0.2
    out = cl.gae(np.array([[1.0, 1.0]]), np.array([[1.0, 2.0]]), gamma=0.1, lambda_=0.5, bootstrap_value=[10.0])
    np.testing.assert_allclose(out.advantages, [[0.2, 0.0]], atol=1e-12)
    # same, terminated: d1 = 1 - 2 = -1 ; A0 = 0.2 + 0.05 * -1 = 0.15
    out = cl.gae(
        np.array([[1.0, 1.0]]),
        np.array([[1.0, 2.0]]),
        gamma=0.1,
        lambda_=0.5,
        bootstrap_value=[10.0],
        terminated=[True],
    )
    np.testing.assert_allclose(out.advantages, [[0.15, -1.0]])


def test_gae_lambda_zero_is_td_error():
    r = np.array([[1.0, 2.0, 3.0]])
    v = np.array([[0.5, 1.0, 1.5]])
    out = cl.gae(r, v, gamma=0.1, lambda_=0.0, terminated=[True])
    # delta_t = r_t + 0.1 V_{t+1} - V_t: [1 + 0.1 - 0.5, 2 + 0.15 - 1, 3 - 1.5]
    np.testing.assert_allclose(out.advantages, [[0.6, 1.15, 1.5]])


def test_monte_carlo_with_and_without_values():
    r = np.array([[0.0, 1.0]])
    out = cl.monte_carlo(r, gamma=1.0)
    np.testing.assert_allclose(out.advantages, [[1.0, 1.0]])
    out = cl.monte_carlo(r, np.array([[0.25, 0.5]]), gamma=1.0)
    np.testing.assert_allclose(out.advantages, [[0.75, 0.5]])


def test_lambda_returns_equal_gae_plus_values():
    r = np.array([[1.0, 0.0, 2.0]])
    v = np.array([[0.3, 0.2, 0.1]])
    lr = cl.lambda_returns(r, v, gamma=0.9, lambda_=0.7)
    out = cl.gae(r, v, gamma=0.9, lambda_=0.7)
    np.testing.assert_allclose(lr, out.advantages + v)


def test_torch_in_torch_out_keeps_dtype_and_device():
    r = torch.tensor([[0.0, 1.0]], dtype=torch.float32)
    v = torch.zeros(1, 2, dtype=torch.float32)
    out = cl.gae(r, v, gamma=0.99, lambda_=0.95)
    assert isinstance(out.advantages, torch.Tensor) and out.advantages.dtype == torch.float32
    ret = cl.discounted_returns(r.double(), gamma=0.5)
    assert ret.dtype == torch.float64


def test_torch_path_matches_compiled_kernels(monkeypatch):
    """The torch implementation (used off-CPU and for small batches) equals the numba kernels."""
    from creditlab import _kernels

    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 7))
    v = rng.normal(size=(5, 7))
    m = np.arange(7)[None, :] < np.array([7, 3, 1, 5, 6])[:, None]
    d = np.where(m, rng.uniform(size=(5, 7)), 0)
    boot = rng.normal(size=5)
    kw = dict(gamma=0.9, mask=m, discounts=d, bootstrap_value=boot)
    results = {}
    for backend in ("numba", "torch"):
        monkeypatch.setattr(_kernels, "BACKEND", backend)
        results[backend] = (
            cl.gae(r, v, lambda_=0.8, **kw),
            cl.discounted_returns(r, **kw),
            cl.grpo(r[:, 0], [0, 0, 1, 1, 1]),
        )
    (a1, g1, p1), (a2, g2, p2) = results["numba"], results["torch"]
    np.testing.assert_allclose(a1.advantages, a2.advantages, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p1.advantages, p2.advantages, rtol=1e-12, atol=1e-12)
    assert a1.metrics.keys() == a2.metrics.keys()
    for k in a1.metrics:
        assert a1.metrics[k] == pytest.approx(a2.metrics[k], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------ tier 2: properties


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=padded_batches(), gamma=st.sampled_from([0.0, 0.1, 0.9, 1.0]), lam=st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_gae_matches_reference_loop(kernel_backend, batch, gamma, lam):
    out = cl.gae(
        batch["rewards"],
        batch["values"],
        gamma=gamma,
        lambda_=lam,
        mask=batch["mask"],
        discounts=batch["discounts"],
        bootstrap_value=batch["bootstrap"],
    )
    ref = gae_loop(batch["rewards"], batch["values"], batch["mask"], batch["discounts"], batch["bootstrap"], gamma, lam)
    tol = 1e-4 if batch["dtype"] == np.float32 else 1e-10
    np.testing.assert_allclose(out.advantages, ref, rtol=tol, atol=tol)
    assert out.advantages.dtype == batch["dtype"]
    assert np.all(out.advantages[~batch["mask"]] == 0)  # padding never leaks


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=padded_batches(), gamma=st.sampled_from([0.1, 0.9, 1.0]))
def test_lambda_one_gives_monte_carlo(kernel_backend, batch, gamma):
    kw = dict(mask=batch["mask"], discounts=batch["discounts"], bootstrap_value=batch["bootstrap"])
    adv = cl.gae(batch["rewards"], batch["values"], gamma=gamma, lambda_=1.0, **kw).advantages
    mc = cl.monte_carlo(batch["rewards"], batch["values"], gamma=gamma, **kw).advantages
    ref = returns_loop(batch["rewards"], batch["mask"], batch["discounts"], batch["bootstrap"], gamma) - np.where(
        batch["mask"], batch["values"], 0
    )
    tol = 1e-4 if batch["dtype"] == np.float32 else 1e-10
    np.testing.assert_allclose(adv, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(mc, ref, rtol=tol, atol=tol)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=padded_batches(general_discounts=False), gamma=st.sampled_from([0.5, 0.99]), lam=st.sampled_from([0.5, 0.95])
)
def test_concatenated_episodes_equal_split_ones(kernel_backend, batch, gamma, lam):
    """Two episodes in one row, separated by a zero discount, give the same advantages as two rows."""
    r, v, m, d = batch["rewards"], batch["values"], batch["mask"], batch["discounts"]
    n = batch["lengths"]
    if r.shape[0] < 2:
        return
    # Row 0 terminated + row 1 (any ending) concatenated into one row.
    d0 = d[0].copy()
    d0[n[0] - 1] = 0.0
    cat_r = np.concatenate([r[0, : n[0]], r[1, : n[1]]])[None]
    cat_v = np.concatenate([v[0, : n[0]], v[1, : n[1]]])[None]
    cat_d = np.concatenate([d0[: n[0]], d[1, : n[1]]])[None]
    joint = cl.gae(
        cat_r, cat_v, gamma=gamma, lambda_=lam, discounts=cat_d, bootstrap_value=batch["bootstrap"][1:2]
    ).advantages
    split = cl.gae(
        r[:2],
        v[:2],
        gamma=gamma,
        lambda_=lam,
        mask=m[:2],
        discounts=np.stack([d0, d[1]]),
        bootstrap_value=batch["bootstrap"][:2],
    ).advantages
    tol = 1e-4 if batch["dtype"] == np.float32 else 1e-10
    np.testing.assert_allclose(joint[0, : n[0]], split[0, : n[0]], rtol=tol, atol=tol)
    np.testing.assert_allclose(joint[0, n[0] :], split[1, : n[1]], rtol=tol, atol=tol)


@settings(max_examples=40, deadline=None)
@given(batch=padded_batches())
def test_numpy_and_torch_agree(batch):
    kw = dict(gamma=0.9, lambda_=0.9)
    a_np = cl.gae(batch["rewards"], batch["values"], mask=batch["mask"], discounts=batch["discounts"], **kw).advantages
    a_t = cl.gae(
        torch.from_numpy(batch["rewards"]),
        torch.from_numpy(batch["values"]),
        mask=torch.from_numpy(batch["mask"]),
        discounts=torch.from_numpy(batch["discounts"]),
        **kw,
    ).advantages
    np.testing.assert_array_equal(a_np, a_t.numpy())


def test_padding_values_do_not_leak():
    r = np.array([[1.0, 2.0, 0.0]])
    m = np.array([[1, 1, 0]], bool)
    a = cl.gae(r, np.array([[0.1, 0.2, 123.0]]), gamma=0.9, lambda_=0.9, mask=m).advantages
    b = cl.gae(r, np.array([[0.1, 0.2, -7.0]]), gamma=0.9, lambda_=0.9, mask=m).advantages
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ errors


def test_errors_name_the_argument():
    r = np.zeros((2, 3))
    with pytest.raises(cl.ShapeError, match="bootstrap_value"):
        cl.gae(r, np.zeros((2, 4)), gamma=1, lambda_=1)
    with pytest.raises(cl.RangeError, match="lambda_"):
        cl.gae(r, np.zeros((2, 3)), gamma=1, lambda_=-0.1)
    with pytest.raises(cl.RangeError, match="gamma"):
        cl.discounted_returns(r, gamma=1.01)
    with pytest.raises(cl.NonFiniteError, match=r"rewards\[1, 2\]"):
        cl.discounted_returns(np.array([[0, 0, 0], [0, 0, np.nan]]), gamma=1)
    with pytest.raises(cl.NonFiniteError, match="values"):
        cl.gae(r, np.array([[0, np.inf, 0], [0, 0, 0]]), gamma=1, lambda_=1)
    with pytest.raises(cl.MaskError, match="hole"):
        cl.discounted_returns(r, gamma=1, mask=[[1, 0, 1], [1, 1, 1]])
    with pytest.raises(cl.MaskError, match="0 and 1"):
        cl.discounted_returns(r, gamma=1, mask=[[1, 2, 1], [1, 1, 1]])
    with pytest.raises(cl.EmptyBatchError, match="episode 1 is empty"):
        cl.discounted_returns(r, gamma=1, mask=[[1, 1, 1], [0, 0, 0]])
    with pytest.raises(cl.EmptyBatchError):
        cl.discounted_returns(np.zeros((0, 3)), gamma=1)
    with pytest.raises(cl.ShapeError, match="ragged"):
        cl.discounted_returns([[1.0, 2.0], [1.0]], gamma=1)
    with pytest.raises(cl.DtypeError, match="strings"):
        cl.discounted_returns(np.array([["a", "b"]]), gamma=1)
    with pytest.raises(cl.DtypeError, match="complex"):
        cl.discounted_returns(np.array([[1j, 2]]), gamma=1)
    with pytest.raises(cl.RangeError, match=r"discounts\[0, 1\]"):
        cl.discounted_returns(np.zeros((1, 2)), gamma=1, discounts=[[1.0, 2.0]])
    with pytest.raises(cl.RangeError, match="either discounts or terminated"):
        cl.discounted_returns(np.zeros((1, 2)), gamma=1, discounts=[[1.0, 1.0]], terminated=[True])
    # NaN on padding is fine: only valid steps are checked
    cl.discounted_returns(np.array([[1.0, np.nan]]), gamma=1, mask=[[1, 0]])
    # creditlab errors are ValueError/TypeError subclasses
    assert issubclass(cl.ShapeError, ValueError) and issubclass(cl.DtypeError, TypeError)


def test_bool_terminated_and_full_mask_fast_paths_agree_with_general_ones():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(5, 4)).astype(np.float32)
    v = rng.normal(size=(5, 4)).astype(np.float32)
    term = np.array([True, False, True, True, False])
    a = cl.gae(r, v, gamma=0.9, lambda_=0.8, mask=np.ones((5, 4), bool), terminated=term)
    b = cl.gae(r, v, gamma=0.9, lambda_=0.8, mask=np.ones((5, 4), np.float32), terminated=term.astype(np.float64))
    c = cl.gae(torch.from_numpy(r), torch.from_numpy(v), gamma=0.9, lambda_=0.8, terminated=torch.from_numpy(term))
    np.testing.assert_array_equal(a.advantages, b.advantages)
    np.testing.assert_array_equal(a.advantages, c.advantages.numpy())
    with pytest.raises(cl.ShapeError, match="terminated"):
        cl.gae(r, v, gamma=0.9, lambda_=0.8, terminated=np.ones(4, bool))


# ------------------------------------------------------------------------------ issue 10: overflow


@pytest.mark.parametrize("dtype, big", [(np.float64, 1e308), (np.float32, 3e38)])
def test_returns_past_the_dtype_range_are_a_named_error(kernel_backend, dtype, big):
    # Each reward is finite, the two-step return is not representable: never return inf/NaN.
    r = np.array([[big, big], [1.0, 0.0]], dtype=dtype)
    v = np.zeros_like(r)
    with pytest.raises(cl.errors.NonFiniteError, match="overflow"):
        cl.gae(r, v, gamma=1.0, lambda_=1.0)
    with pytest.raises(cl.errors.NonFiniteError, match="overflow"):
        cl.discounted_returns(r, gamma=1.0)
    with pytest.raises(cl.errors.NonFiniteError, match="overflow"):
        cl.monte_carlo(r, gamma=1.0)


def test_gae_metrics_stay_finite_for_huge_finite_advantages(kernel_backend):
    # A = [2e200, 1e200]: representable, but A^2 overflows the float64 sums behind the metrics.
    out = cl.gae(np.array([[1e200, 1e200]]), np.zeros((1, 2)), gamma=1.0, lambda_=1.0)
    np.testing.assert_allclose(out.advantages, [[2e200, 1e200]])
    assert out.metrics["advantages/mean"] == pytest.approx(1.5e200)
    assert out.metrics["advantages/std"] == pytest.approx(0.5e200)  # population std of [2, 1] x 1e200
    # REINFORCE++ whitening of such returns equals whitening of the rescaled ones
    r = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(
        cl.reinforce_pp(r * 1e200, eps=0.0).advantages, cl.reinforce_pp(r, eps=0.0).advantages, rtol=1e-12
    )


# ------------------------------------------------------------------------------ issue 10: masks read in one compiled pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8]),
    defect=st.sampled_from(["none", "hole", "bad_value", "nan"]),
    prefix=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_numeric_masks_read_the_same_compiled_and_in_torch(monkeypatch, lengths, dtype, defect, prefix, seed):
    # A float/int mask is read by one compiled kernel on CPU (values 0/1, lengths, first hole,
    # full rows); the torch path takes five whole-array operations. Same masks, lengths, errors.
    from creditlab import _kernels
    from creditlab._arrays import mask_info

    rng = np.random.default_rng(seed)
    t = max(max(lengths), 1)
    m = (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(dtype)
    if defect == "hole" and t > 1:
        b = int(rng.integers(len(lengths)))
        m[b] = 0
        m[b, t - 1] = 1
    elif defect == "bad_value":
        m[int(rng.integers(len(lengths))), int(rng.integers(t))] = 2
    elif defect == "nan" and np.dtype(dtype).kind == "f":
        m[int(rng.integers(len(lengths))), int(rng.integers(t))] = np.nan
    results = []
    for backend in ("numba", "torch"):
        monkeypatch.setattr(_kernels, "BACKEND", backend)
        try:
            mb, lens, full = mask_info(torch.from_numpy(m), "mask", m.shape, device=torch.device("cpu"), prefix=prefix)
            results.append(("ok", mb.numpy().tolist(), lens.numpy().tolist(), full))
        except (cl.MaskError, cl.EmptyBatchError) as exc:
            results.append((type(exc).__name__, str(exc)))
    assert results[0] == results[1]


def test_gae_with_a_float_mask_from_torch_names_bad_masks(kernel_backend):
    r = torch.zeros(2, 3)
    v = torch.zeros(2, 3)
    with pytest.raises(cl.MaskError, match="0 and 1"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(cl.MaskError, match=r"row 0 has a hole: step 1 is padding but step 2 is valid"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(cl.EmptyBatchError, match="episode 1 is empty"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    out = cl.gae(
        r + 1,
        v,
        gamma=1,
        lambda_=1,
        mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
        terminated=torch.ones(2, dtype=torch.bool),
    )
    # row 0 has two valid steps of reward 1: A = [2, 1, 0]; row 1 three: A = [3, 2, 1]
    np.testing.assert_array_equal(out.advantages.numpy(), [[2.0, 1.0, 0.0], [3.0, 2.0, 1.0]])


# ------------------------------------------------------------------------------ fast paths (issue 10, defect 19)


def _general_form(x):
    """The same data as a strided view (not C-contiguous), which the usual-call reading refuses, so
    the general reading runs."""
    if x is None:
        return None
    wide = torch.empty((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype) if isinstance(x, torch.Tensor) else None
    if wide is None:
        wide = np.empty((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=padded_batches(max_b=9, max_t=9, general_discounts=False),
    as_torch=st.booleans(),
    mask_kind=st.sampled_from(["none", "bool", "float"]),
    with_terminated=st.booleans(),
    with_bootstrap=st.booleans(),
)
def test_usual_call_reading_gives_what_the_general_reading_gives(
    kernel_backend, batch, as_torch, mask_kind, with_terminated, with_bootstrap
):
    """step_inputs reads the usual call (C-contiguous float CPU arrays, bool or 0/1 mask, bool terminated)
    in a few operations; GAE and its Steps equal those of the general reading of the same data."""
    from creditlab._steps import _plain_steps, step_inputs

    r, v = batch["rewards"], batch["values"]
    mask = {"none": None, "bool": batch["mask"], "float": batch["mask"].astype(r.dtype)}[mask_kind]
    if mask is None:
        r, v = np.where(batch["mask"], r, 0).astype(r.dtype), np.where(batch["mask"], v, 0).astype(r.dtype)
    term = batch["discounts"][np.arange(r.shape[0]), batch["lengths"] - 1] == 0 if with_terminated else None
    boot = batch["bootstrap"] if with_bootstrap else None
    args = [r, v, mask, term, boot]
    if as_torch:
        args = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in args]
    r_, v_, m_, t_, b_ = args
    if mask_kind != "float" or kernel_backend == "numba":  # a 0/1 float mask is read by a compiled kernel
        assert _plain_steps(r_, m_, t_, b_, check_rewards=False) is not None  # the usual call is recognized
    kw = dict(gamma=0.9, lambda_=0.8)
    fast = cl.gae(r_, v_, mask=m_, terminated=t_, bootstrap_value=b_, **kw)
    slow = cl.gae(*(_general_form(a) for a in (r_, v_)), mask=_general_form(m_), terminated=_general_form(t_),
                  bootstrap_value=_general_form(b_), **kw)  # fmt: skip
    to_np = (lambda x: x.numpy()) if as_torch else np.asarray
    np.testing.assert_array_equal(to_np(fast.advantages), to_np(slow.advantages))
    np.testing.assert_array_equal(to_np(fast.returns), to_np(slow.returns))
    assert fast.metrics == pytest.approx(slow.metrics, rel=1e-12, abs=1e-12)
    s_fast = step_inputs(r_, mask=m_, terminated=t_, bootstrap_value=b_)
    s_slow = step_inputs(_general_form(r_), mask=_general_form(m_), terminated=_general_form(t_),
                         bootstrap_value=_general_form(b_))  # fmt: skip
    for field in ("rewards", "mask", "lengths", "last_discount", "bootstrap"):
        a, b = getattr(s_fast, field), getattr(s_slow, field)
        assert a.dtype == b.dtype and torch.equal(a, b), field
    assert (s_fast.full, s_fast.num_valid, s_fast.backend, s_fast.discounts) == (
        s_slow.full,
        s_slow.num_valid,
        s_slow.backend,
        s_slow.discounts,
    )


def test_usual_call_reading_leaves_every_bad_input_to_the_general_reading():
    # Inputs the usual-call reading would accept by type but the general reading rejects: each
    # still gets the general reading's named error.
    r = np.zeros((2, 3), np.float32)
    v = np.zeros((2, 3), np.float32)
    with pytest.raises(cl.MaskError, match="row 0 has a hole"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=np.array([[True, False, True], [True, True, True]]))
    with pytest.raises(cl.EmptyBatchError, match="episode 1 is empty"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(cl.MaskError, match="0 and 1"):
        cl.gae(r, v, gamma=1, lambda_=1, mask=np.array([[1.0, 2.0, 0.0], [1.0, 1.0, 1.0]], np.float32))
    with pytest.raises(cl.NonFiniteError, match="bootstrap_value"):
        cl.gae(r, v, gamma=1, lambda_=1, bootstrap_value=np.array([0.0, np.nan], np.float32))
    with pytest.raises(cl.ShapeError, match="terminated"):
        cl.gae(r, v, gamma=1, lambda_=1, terminated=np.ones(3, bool))
    with pytest.raises(cl.NonFiniteError, match=r"rewards\[1, 2\]"):
        cl.discounted_returns(np.array([[0, 0, 0], [0, 0, np.inf]], np.float32), gamma=1.0)


@pytest.mark.parametrize(
    "shape, padded, with_discounts",
    [((300, 16), True, False), ((300, 16), False, True), ((129, 17), True, True), ((5, 3000), True, False)],
)
def test_gae_matches_reference_across_kernel_blocks(kernel_backend, shape, padded, with_discounts):
    """The compiled kernel works on blocks of rows (_kernels.BLOCK steps) and on pairs of rows of
    unequal lengths; batches larger than one block, odd rows out and long rows agree with the loop."""
    rng = np.random.default_rng(sum(shape))
    b, t = shape
    lengths = rng.integers(1, t + 1, size=b) if padded else np.full(b, t)
    mask = np.arange(t)[None, :] < lengths[:, None]
    r = rng.normal(size=shape)
    v = np.where(mask, rng.normal(size=shape), np.nan)  # padding values may be anything
    d = np.where(mask, rng.uniform(0, 1, size=shape) * (rng.uniform(size=shape) > 0.1), 0.0)
    if not with_discounts:
        d = mask.astype(float)
        d[np.arange(b), lengths - 1] = rng.uniform(size=b) < 0.5
    boot = rng.normal(size=b)
    out = cl.gae(r, v, gamma=0.99, lambda_=0.95, mask=mask, discounts=d, bootstrap_value=boot)
    ref = gae_loop(np.where(mask, r, 0), np.where(mask, v, 0), mask, d, boot, 0.99, 0.95)
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.returns, np.where(mask, ref + np.where(mask, v, 0), 0), rtol=1e-10, atol=1e-10)
    valid = ref[mask]
    assert out.metrics["advantages/mean"] == pytest.approx(valid.mean(), rel=1e-9, abs=1e-12)
    assert out.metrics["advantages/std"] == pytest.approx(valid.std(), rel=1e-9, abs=1e-12)
