"""Episodes container: construction, conversions, Parquet/JSONL schema, errors."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

import creditlab as cl
from creditlab.tables import read_table


def test_from_lists_pads_and_flags():
    ep = cl.Episodes.from_lists(
        [[0.0, 1.0, 2.0], [5.0]],
        terminated=[True, False],
        truncated=[False, True],
        bootstrap_value=[0.0, 3.0],
        values=[[0.1, 0.2, 0.3], [0.4]],
        outcomes=[1.0, None],
        group_ids=["a", "a"],
        components=[{"correct": 1.0, "format": None}, {"correct": 0.0, "format": 1.0}],
    )
    assert ep.lengths.tolist() == [3, 1]
    assert ep.rewards.tolist() == [[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]]
    assert ep.mask.tolist() == [[True, True, True], [True, False, False]]
    # termination -> discount 0 at the last step; truncation keeps 1 (bootstrap applies)
    assert ep.discounts.tolist() == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert ep.outcome_present.tolist() == [True, False] and ep.outcomes.tolist() == [1.0, 0.0]
    assert ep.component_names == ("correct", "format")
    assert ep.component_present.tolist() == [[True, False], [True, True]]
    assert ep.group_ids.tolist() == ["a", "a"]  # ids are kept as given
    np.testing.assert_allclose(ep.episode_returns(), [1.0, 0.0])


def test_string_ids_stay_stable_across_batches():
    a = cl.Episodes.from_lists([[1.0], [0.0]], group_ids=["p1", "p1"])
    b = cl.Episodes.from_lists([[5.0], [3.0]], group_ids=["p2", "p2"])
    cat = cl.Episodes.concat([a, b])
    assert cat.group_ids.tolist() == ["p1", "p1", "p2", "p2"]
    out = cl.grpo(cat.returns(), cat.group_ids, std_scale="none")
    np.testing.assert_allclose(out.advantages, [0.5, -0.5, 1.0, -1.0])  # two groups, not one
    assert cat.torch().group_ids.tolist() == ["p1", "p1", "p2", "p2"]
    with pytest.raises(cl.GroupError, match="None"):
        cl.Episodes.from_lists([[1.0], [2.0]], group_ids=["a", None])
    with pytest.raises(cl.GroupError, match="mixes id types"):
        cl.grpo([1.0, 0.0, 1.0, 0.0], np.array([1, "1", 1, "1"], dtype=object))


def test_flags_defaults_every_episode_ends_one_way():
    e = cl.Episodes.from_lists([[1.0], [2.0]])
    assert e.terminated.tolist() == [True, True] and e.truncated.tolist() == [False, False]
    e = cl.Episodes.from_lists([[1.0], [2.0]], truncated=[True, False])
    assert e.terminated.tolist() == [False, True]
    e = cl.Episodes.from_lists([[1.0], [2.0]], terminated=[False, True])
    assert e.truncated.tolist() == [True, False]
    assert e.discounts[:, 0].tolist() == [1.0, 0.0]


def test_numpy_torch_roundtrip():
    ep = cl.Episodes.from_lists([[1.0, 2.0], [3.0]], values=[[0.0, 0.0], [0.0]], group_ids=[0, 1])
    t = ep.torch()
    assert isinstance(t.rewards, torch.Tensor) and t.rewards.dtype == torch.float64
    assert isinstance(t.mask, torch.Tensor) and t.mask.dtype == torch.bool
    back = t.numpy()
    np.testing.assert_array_equal(back.rewards, ep.rewards)
    np.testing.assert_array_equal(back.group_ids, ep.group_ids)
    # torch in -> torch out for from_padded
    e2 = cl.Episodes.from_padded(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert e2.is_torch


def test_select_and_concat():
    ep = cl.Episodes.from_lists([[1.0, 2.0, 3.0], [4.0], [5.0, 6.0]], group_ids=[0, 1, 2])
    sub = ep.select([1, 2])
    assert sub.max_steps == 2 and sub.lengths.tolist() == [1, 2] and sub.group_ids.tolist() == [1, 2]
    cat = cl.Episodes.concat([sub, ep.select([0])])
    assert cat.max_steps == 3 and cat.lengths.tolist() == [1, 2, 3]
    assert cat.rewards[2].tolist() == [1.0, 2.0, 3.0]


def test_methods_run_on_episodes_through_registry():
    ep = cl.Episodes.from_lists([[0.0, 1.0], [0.0, 0.0], [1.0]], values=[[0, 0], [0, 0], [0]], group_ids=[0, 0, 1])
    out = cl.get_method("gae")(ep, gamma=1.0, lambda_=1.0)
    np.testing.assert_allclose(out.advantages, [[1, 1], [0, 0], [1, 0]])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = cl.get_method("rloo")(ep)
    # returns: [1, 0, 1]; group 0 RLOO: [1 - 0, 0 - 1]; group 1 singleton: 0; broadcast to steps
    np.testing.assert_allclose(g.advantages, [[1, 1], [-1, -1], [0, 0]])
    with pytest.raises(cl.MissingColumnError, match="gdpo"):
        cl.get_method("gdpo")(ep)
    with pytest.raises(cl.RangeError, match="no parameter"):
        cl.get_method("gae")(ep, gamm=0.9)
    with pytest.raises(cl.UnknownMethodError, match="did you mean"):
        cl.get_method("grpoo")


def test_registry_lists_every_family():
    fams = {m.family for m in cl.list_methods()}
    assert {"advantage", "normalization", "shaping"} <= fams
    for m in cl.list_methods():
        assert m.summary and m.needs is not None and m.source


# ------------------------------------------------------------------------------ files


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_roundtrip_and_schema(tmp_path):
    rows = [
        {"episode_id": "b", "step": 1, "reward": 1.0, "value": 0.5, "terminated": True, "outcome": 2.0, "group_id": 7},
        {"episode_id": "a", "step": 0, "reward": 0.5, "value": 0.1, "group_id": 7, "obs": [1.0, 2.0], "action": 1},
        {"episode_id": "b", "step": 0, "reward": None, "value": 0.2, "group_id": 7},
        {
            "episode_id": "a",
            "step": 1,
            "reward": 0.25,
            "value": 0.3,
            "truncated": True,
            "bootstrap_value": 4.0,
            "group_id": 7,
            "obs": [3.0, 4.0],
            "action": 0,
        },
    ]
    for r in rows:  # obs/action on every row of the same file
        r.setdefault("obs", [0.0, 0.0])
        r.setdefault("action", 0)
    path = tmp_path / "eps.jsonl"
    _write_jsonl(path, rows)
    ep = cl.read_episodes(path)
    # episodes in order of first appearance: "b" then "a"
    assert list(ep.episode_ids) == ["b", "a"]
    assert ep.rewards.tolist() == [[0.0, 1.0], [0.5, 0.25]]
    assert ep.reward_present.tolist() == [[False, True], [True, True]]  # null reward = not applicable
    assert ep.terminated.tolist() == [True, False] and ep.truncated.tolist() == [False, True]
    assert ep.bootstrap_value.tolist() == [0.0, 4.0]
    assert ep.outcome_present.tolist() == [True, False]
    assert ep.observations.shape == (2, 2, 2) and ep.observations[1].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # write and read back through Parquet
    pq_path = tmp_path / "eps.parquet"
    cl.write_table(ep.to_table(advantage=np.ones((2, 2))), pq_path)
    back = cl.read_episodes(pq_path)
    np.testing.assert_array_equal(back.rewards, ep.rewards)
    np.testing.assert_array_equal(back.terminated, ep.terminated)
    assert "advantage" in back.extras


def test_file_errors(tmp_path):
    p = tmp_path / "x.jsonl"
    _write_jsonl(p, [{"episode_id": 1, "reward": 1.0}])
    with pytest.raises(cl.MissingColumnError, match="'step'"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "value": 1.0}])
    with pytest.raises(cl.MissingColumnError, match="reward column"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": 1.0}, {"episode_id": 1, "step": 2, "reward": 1.0}])
    with pytest.raises(cl.DataFormatError, match=r"steps \[0, 2\]; expected 0..1"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": 1.0}, {"episode_id": 1, "step": 0, "reward": 1.0}])
    with pytest.raises(cl.DataFormatError, match="each exactly once"):
        cl.read_episodes(p)
    _write_jsonl(
        p,
        [
            {"episode_id": 1, "step": 0, "reward": 1.0, "outcome": 1.0},
            {"episode_id": 1, "step": 1, "reward": 1.0, "outcome": 2.0},
        ],
    )
    with pytest.raises(cl.DataFormatError, match="'outcome' has different values"):
        cl.read_episodes(p)
    _write_jsonl(
        p,
        [{"episode_id": 1, "step": 0, "reward": 1.0, "terminated": True}, {"episode_id": 1, "step": 1, "reward": 1.0}],
    )
    with pytest.raises(cl.DataFormatError, match="terminated=true at step 0"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": float("inf")}])
    with pytest.raises(cl.NonFiniteError, match="column 'reward' is inf at episode 1 step 0"):
        cl.read_episodes(p)
    p.write_text('{"episode_id": "a", "step": 0, "reward": 1.0}\n{"episode_id": "a", "step": 1, "reward": NaN}\n')
    with pytest.raises(cl.NonFiniteError, match="use null for 'not applicable'"):
        cl.read_episodes(p)  # NaN is an error; null means "not applicable"
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": "abc"}])
    with pytest.raises(cl.DtypeError, match="column 'reward' must hold numbers"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": 1.0, "terminated": "yes"}])
    with pytest.raises(cl.DtypeError, match="terminated"):
        cl.read_episodes(p)
    _write_jsonl(
        p,
        [
            {"episode_id": 1, "step": 0, "reward": 1.0, "discount": None},
            {"episode_id": 1, "step": 1, "reward": 1.0, "discount": 1.0},
        ],
    )
    with pytest.raises(cl.DataFormatError, match="'discount' has nulls"):
        cl.read_episodes(p)
    _write_jsonl(p, [{"episode_id": 1, "step": 0, "reward": 1.0, "outcomes": 1.0}])
    with pytest.warns(cl.errors.CreditlabWarning, match="did you mean 'outcome'"):
        cl.read_episodes(p)
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n")
    with pytest.raises(cl.DataFormatError, match="parquet or .jsonl"):
        cl.read_episodes(bad)
    with pytest.raises(FileNotFoundError):
        cl.read_episodes(tmp_path / "missing.jsonl")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"episode_id": [1], "reward": [1.0]}), tmp_path / "y.parquet")
    with pytest.raises(cl.MissingColumnError, match="'step'"):
        cl.read_episodes(tmp_path / "y.parquet")


def test_constructor_errors():
    with pytest.raises(cl.EmptyBatchError, match="episode 1 is empty"):
        cl.Episodes.from_lists([[1.0], []])
    with pytest.raises(cl.EmptyBatchError):
        cl.Episodes.from_lists([])
    with pytest.raises(cl.ShapeError, match="values\\[0\\] has 1 steps"):
        cl.Episodes.from_lists([[1.0, 2.0]], values=[[1.0]])
    with pytest.raises(cl.GroupError, match="group_ids"):
        cl.Episodes.from_lists([[1.0], [2.0]], group_ids=[0])
    with pytest.raises(cl.DataFormatError, match="both terminated and truncated"):
        cl.Episodes.from_lists([[1.0]], terminated=[True], truncated=[True])
    with pytest.raises(cl.DtypeError, match="None"):
        cl.Episodes.from_lists([[1.0, None]])
    with pytest.raises(cl.NonFiniteError):
        cl.Episodes.from_lists([[1.0, float("nan")]])
    with pytest.raises(cl.ShapeError, match="observations"):
        cl.Episodes.from_padded(np.zeros((2, 3)), observations=np.zeros((2, 2, 4)))


def test_sample_file_loads():
    ep = cl.read_episodes("examples/episodes.jsonl")
    assert ep.num_episodes == 32 and ep.component_names == ("correct", "format")
    assert ep.terminated.all()
    table = read_table("examples/episodes.jsonl")
    assert table.num_rows == ep.num_steps


def _tiny_model_folder(tmp_path):
    """A 1-layer random GPT-2 and a word-level tokenizer saved as a transformers folder (None
    without transformers)."""
    try:
        import transformers
        from tokenizers import Tokenizer, models, pre_tokenizers
    except ImportError:  # pragma: no cover - the llm extra
        return None
    words = ["[PAD]", "[BOS]", "[UNK]", "q", "two", "three", "the", "answer", "is"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(words), n_positions=32, n_embd=8, n_layer=1, n_head=1)
    )
    folder = tmp_path / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_every_registered_method_runs_on_a_rich_batch(tmp_path):
    """Each registry entry runs through Method.__call__ (needs parsing included) on a batch that has
    every column, and keeps the batch's array kind."""
    import warnings

    rng = np.random.default_rng(0)
    lengths = [3, 1, 4, 2]
    ep = cl.Episodes.from_lists(
        [list(rng.uniform(size=n)) for n in lengths],
        values=[list(rng.uniform(size=n)) for n in lengths],
        outcomes=[1.0, 0.0, None, 1.0],
        components=[{"c": 1.0, "f": 0.0}, {"c": 0.0, "f": 1.0}, {"c": 1.0, "f": None}, {"c": 0.0, "f": 0.0}],
        group_ids=["a", "a", "b", "b"],
        task_ids=[0, 0, 1, 1],
    ).replace(extras={"potential": rng.normal(size=(4, 4)), "length": np.full((4, 4), 300.0)})
    # per-turn extras of the creditlab.llm methods: GiGPO anchors, IGPO beliefs log p(answer | history)
    anchors = np.empty(4, dtype=object)
    for i, n in enumerate(lengths):
        anchors[i] = [f"s{v}" for v in rng.integers(0, 2, size=n)]
    ep = ep.replace(
        extras={**ep.extras, "anchors": anchors, "belief_log_probs": np.log(rng.uniform(0.1, 1.0, size=(4, 5)))}
    )
    # token-level and tree extras: log-probs (KL, distillation, optimal token baseline), greedy
    # baselines (ReMax), Monte Carlo values (VinePPO, SPO), node ids (tree rows: one chain per row)
    lp = lambda: np.log(rng.uniform(0.05, 1.0, size=(4, 4)))  # noqa: E731
    ep = ep.replace(
        extras={
            **ep.extras,
            "log_probs": lp(),
            "ref_log_probs": lp(),
            "teacher_log_probs": lp(),
            "sum_pi_squared": rng.uniform(0.2, 0.9, size=(4, 4)),
            "greedy_reward": np.full((4, 4), 0.5),
            "mc_values": np.where(rng.random((4, 4)) < 0.5, rng.uniform(size=(4, 4)), np.nan),
            "prefix_values": np.where(rng.random((4, 4)) < 0.3, rng.uniform(size=(4, 4)), np.nan),
            "node_ids": np.array([[f"n{i}-{t}" for t in range(4)] for i in range(4)]),
        }
    )
    # one text per episode for the likelihood reward, scored by a tiny random model saved here
    texts = {
        "prompt": ["q two", "q three", "q", "q two"],
        "response": [" the answer is", "", " two", " is"],
        "reference": ["two", "three", None, "two"],
    }
    ep = ep.replace(extras={**ep.extras, **{k: np.array(v, dtype=object) for k, v in texts.items()}})
    params = {"reference_likelihood": {"model": _tiny_model_folder(tmp_path)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in cl.list_methods():
            if m.kind == "assigner" or (m.name in params and params[m.name]["model"] is None):
                continue
            for batch in (ep, ep.torch()):
                out = m(batch, **params.get(m.name, {}))
                arr = out.advantages if m.kind == "advantages" else out.rewards
                assert tuple(arr.shape) == (4, 4), m.name
                assert isinstance(arr, torch.Tensor) == batch.is_torch, m.name
                assert np.isfinite(np.asarray(arr)).all(), m.name
                assert all(isinstance(v, float) for v in out.metrics.values()), m.name
