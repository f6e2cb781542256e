"""Generation pipelines end to end through the real client and a scripted loopback server.

LaRe (candidates, repair loop, self-verification merge, fallback), hostile answers, the cache
(second run: zero HTTP calls), provenance, loading the result as a feature function; Eureka-style
refinement with a scripted fitness, Auto MC-Reward critic and trajectory analyzer; CALM.
"""

import json
import os
import re
import socket

import numpy as np
import pytest

from creditlab.programs import (
    LLMClient,
    LLMConfig,
    Program,
    SandboxedReward,
    TaskSpec,
    TrainScore,
    calm_label_transitions,
    calm_rewards,
    calm_subgoals,
    generate_lare_factors,
    lare_features,
    load_program,
    refine_reward,
    summarize_episode,
)
from tests.helpers.fake_llm_server import FakeLLMServer
from tests.helpers.hostile_programs import HOSTILE, PASS_STATIC, render
from tests.helpers.programs_helpers import FAST, lare_answer, no_leftovers  # noqa: F401  (autouse fixture)

SPEC = TaskSpec.from_dict(
    {
        "name": "point",
        "goal": "move the point mass to the origin and stop there",
        "observation": [
            {"dims": "0-1", "name": "position", "description": "x, y", "low": -1, "high": 1},
            {"dims": "2-3", "name": "velocity", "description": "vx, vy", "low": -2, "high": 2},
        ],
        "action": [{"dims": "0-1", "name": "force", "low": -1, "high": 1}],
        "constraints": ["use little force"],
        "episode": "50 steps; the return is revealed at the end",
    }
)

DIST = "import numpy as np\ndef evaluation_func(observation, action):\n    d = np.linalg.norm(observation[:, 0:2], axis=1, keepdims=True)\n    return [-d]\n"
SPEED = "import numpy as np\ndef evaluation_func(observation, action):\n    return [-np.abs(observation[:, 2:3]) - np.abs(observation[:, 3:4])]\n"
EFFORT = "import numpy as np\ndef evaluation_func(observation, action):\n    return [-np.sum(action ** 2, axis=1, keepdims=True)]\n"
MERGED = (
    "import numpy as np\ndef evaluation_func(observation, action):\n"
    "    d = np.linalg.norm(observation[:, 0:2], axis=1, keepdims=True)\n"
    "    s = np.linalg.norm(observation[:, 2:4], axis=1, keepdims=True)\n"
    "    e = np.sum(action ** 2, axis=1, keepdims=True)\n"
    "    return [-d, -s, -e, np.exp(-d / 0.1)]\n"
)
SYNTAX = "import numpy as np\ndef evaluation_func(observation, action)\n    return [observation[:, :1]]\n"
WRONG_SHAPE = "import numpy as np\ndef evaluation_func(observation, action):\n    return [observation[:, 2:4]]\n"
NAN = "import numpy as np\ndef evaluation_func(observation, action):\n    return [np.log(observation[:, 2:3])]\n"


def client_for(server, tmp_path, **kw):
    cfg = dict(model="fake", base_url=server.url, cache_dir=str(tmp_path / "cache"), max_concurrency=1, backoff=0.01)
    return LLMClient(LLMConfig(**{**cfg, **kw}))


def queue(answers):
    return lambda req, i: answers[i] if i < len(answers) else (500, "script exhausted")


LARE_SCRIPT = [
    lare_answer(SYNTAX),
    lare_answer(DIST),  # candidate 0: syntax error, repaired
    lare_answer(WRONG_SHAPE),
    lare_answer(NAN),
    lare_answer(SPEED),  # candidate 1: shape, then NaN, then fixed
    f"Here it is:\n```python\n{EFFORT}```",  # candidate 2: valid at once (fenced code, not JSON)
    lare_answer(render(HOSTILE["fork_loop"])),
    lare_answer(render(HOSTILE["subclasses_escape"], TARGET="/tmp/x")),
    lare_answer(render(HOSTILE["endless_loop"])),  # candidate 3: hostile three times, never passes
    lare_answer(MERGED),  # self-verification merge
]


def test_lare_generation_repairs_merges_and_caches(tmp_path):
    with FakeLLMServer(queue(LARE_SCRIPT)) as server:
        result = generate_lare_factors(SPEC, client_for(server, tmp_path), n_candidates=4, repair_rounds=2, config=FAST)
        assert server.calls == len(LARE_SCRIPT) == 10
        reqs = server.requests
        # the repair turn carries the error text back to the model
        assert "SyntaxError" in reqs[1]["messages"][-1]["content"]
        assert "factor 0 has shape (16, 2); expected [B, 1]" in reqs[3]["messages"][-1]["content"]
        assert "not finite (NaN)" in reqs[4]["messages"][-1]["content"]
        assert "import of 'os' is not allowed" in reqs[7]["messages"][-1]["content"]
        # sampling temperatures: 1.0 for candidates, 0.3 for the merge turn, which shows the passing answers
        assert {r["temperature"] for r in reqs[:9]} == {1.0} and reqs[9]["temperature"] == 0.3
        merge_prompt = reqs[9]["messages"][-1]["content"]
        assert "Candidate 3" in merge_prompt and "Candidate 4" not in merge_prompt

        cands = result.candidates
        assert [c.ok for c in cands] == [True, True, True, False, True]
        assert [len(c.attempts) for c in cands] == [2, 3, 1, 3, 1]
        assert [a.report.failure_kind for a in cands[3].attempts] == ["static", "static", "timeout"]
        assert cands[4].role == "merge"
        assert result.program.code == MERGED and result.program.num_factors == 4
        m = result.metrics
        assert m["programs/merged"] == 1 and m["programs/fallback_raw"] == 0 and m["llm/calls"] == 10
        assert (
            m["programs/rejected/static"] == 3
            and m["programs/rejected/invalid"] == 2
            and m["programs/rejected/timeout"] == 1
        )

        out = tmp_path / "prog"
        result.save(str(out))
        again = generate_lare_factors(SPEC, client_for(server, tmp_path), n_candidates=4, repair_rounds=2, config=FAST)
        assert server.calls == 10, "the second run with the same spec made HTTP calls"
    assert again.program.code == result.program.code
    assert again.metrics["llm/calls"] == 0 and again.metrics["llm/cache_hits"] == 10

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["method"] == "lare" and prov["spec"]["name"] == "point" and prov["llm"]["model"] == "fake"
    assert prov["chosen"]["role"] == "merge" and len(prov["candidates"]) == 5
    assert prov["candidates"][0]["attempts"][0]["report"]["problems"][0].startswith("line 2: SyntaxError")
    assert prov["candidates"][0]["messages"][0]["role"] == "system"
    loaded = load_program(out)
    assert loaded.code == MERGED and loaded.origin == "generated" and loaded.obs_dim == 4 and loaded.num_factors == 4
    assert "Untrusted code" in (out / "program.py").read_text()

    rng = np.random.default_rng(3)
    obs, act = rng.uniform(-1, 1, (1000, 4)), rng.uniform(-1, 1, (1000, 2))
    with lare_features(loaded, config=FAST, chunk_rows=300) as phi:
        feats = phi(obs, act)
    d = np.linalg.norm(obs[:, :2], axis=1)
    expected = np.stack([-d, -np.linalg.norm(obs[:, 2:4], axis=1), -np.sum(act**2, axis=1), np.exp(-d / 0.1)], axis=1)
    np.testing.assert_allclose(feats, expected, rtol=1e-12)


def test_lare_falls_back_to_raw_when_nothing_passes(tmp_path):
    with FakeLLMServer(queue([lare_answer(NAN), "I will not write code.", lare_answer(WRONG_SHAPE)])) as server:
        result = generate_lare_factors(SPEC, client_for(server, tmp_path), n_candidates=1, repair_rounds=2, config=FAST)
        assert server.calls == 3
    assert result.program is None and result.metrics["programs/fallback_raw"] == 1
    kinds = [a.report.failure_kind for a in result.candidates[0].attempts]
    assert kinds == ["invalid", "format", "invalid"]
    result.save(str(tmp_path / "none"))
    assert json.loads((tmp_path / "none" / "provenance.json").read_text())["chosen"] is None


def test_single_passing_candidate_is_chosen_without_merge(tmp_path):
    with FakeLLMServer(queue([lare_answer(DIST), lare_answer(NAN)])) as server:
        result = generate_lare_factors(SPEC, client_for(server, tmp_path), n_candidates=2, repair_rounds=0, config=FAST)
        assert server.calls == 2  # one passing candidate: nothing to merge
    assert result.program.code == DIST and result.metrics["programs/merged"] == 0


def test_every_hostile_answer_is_rejected_or_contained_with_a_reason(tmp_path, monkeypatch):
    """The catalogue of hostile programs, answered by the 'LLM', through the whole pipeline."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    monkeypatch.setenv("CREDITLAB_TEST_SECRET", "s3cr3t-value")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    target = tmp_path / "pwned"
    values = dict(
        PORT=srv.getsockname()[1],
        SECRET_FILE=secret,
        TARGET=target,
        SECRET_NAME="CREDITLAB_TEST_SECRET",
        PARENT_PID=os.getpid(),
    )
    names = list(HOSTILE)
    answers = [lare_answer(render(HOSTILE[n], **values)) for n in names]
    with FakeLLMServer(queue(answers)) as server:
        result = generate_lare_factors(
            SPEC,
            client_for(server, tmp_path),
            n_candidates=len(names),
            repair_rounds=0,
            merge=False,
            config=FAST.replace(timeout=1.0, cpu_seconds=1.0),
        )
        assert server.calls == len(names)
    assert result.program is None
    reasons = {}
    for name, cand in zip(names, result.candidates):
        (attempt,) = cand.attempts
        rep = attempt.report
        assert not rep.ok and rep.problems and rep.failure_kind, name
        reasons[name] = (rep.failure_kind, rep.problems[0])
        assert "s3cr3t-value" not in " ".join(rep.problems)
        if name not in PASS_STATIC:
            assert rep.failure_kind == "static", (name, rep)
    assert reasons["endless_loop"][0] == "timeout"
    assert reasons["alloc_20gb"][0] == "memory" and "20.0 GiB" in reasons["alloc_20gb"][1]
    assert reasons["output_flood"][0] == "timeout"
    assert reasons["recursion_bomb"][0] == "error" and "RecursionError" in reasons["recursion_bomb"][1]
    assert reasons["huge_result"][0] in ("output", "timeout", "memory")
    assert "__subclasses__" in reasons["subclasses_escape"][1]
    assert len(reasons) == 19
    with pytest.raises(BlockingIOError):
        srv.accept()  # nobody connected
    srv.close()
    assert not target.exists()


# ---------------------------------------------------------------------- Eureka / Auto MC-Reward


def reward_code(dist_weight, effort_weight, extra=""):
    return (
        "import numpy as np\n"
        "def compute_reward(observation, action, next_observation):\n"
        "    distance = -np.linalg.norm(next_observation[:, 0:2], axis=1)\n"
        "    effort = -np.sum(action ** 2, axis=1)\n"
        f"    reward = {dist_weight} * distance + {effort_weight} * effort{extra}\n"
        "    return reward, {'distance': distance, 'effort': effort}\n"
    )


def scripted_trainer(calls):
    """A cheap fitness: agreement of the program's reward with a hidden dense reward on a fixed batch."""
    rng = np.random.default_rng(0)
    obs, act = rng.uniform(-1, 1, (600, 4)), rng.uniform(-1, 1, (600, 2))
    nxt = np.clip(obs + 0.1 * np.c_[act, act], -1, 1)
    hidden = -np.linalg.norm(nxt[:, :2], axis=1) - 0.05 * np.sum(act**2, axis=1)

    def train_and_score(program):
        calls.append(program.sha256)
        with SandboxedReward(program, config=FAST) as rf:
            total, comps = rf(obs, act, nxt)
        fitness = -float(np.mean((total - hidden) ** 2))
        chunks = np.array_split(np.arange(600), 3)
        curves = {k: [float(v[c].mean()) for c in chunks] for k, v in comps.items()}
        failed = [
            summarize_episode(SPEC, obs[:5], act[:5], hidden[:5], components={k: v[:5] for k, v in comps.items()})
        ]
        return TrainScore(fitness, [fitness * (3 - k) / 3 for k in range(3)], curves, failed, {})

    return train_and_score


def test_eureka_selection_and_reflection(tmp_path):
    weak, better, best = reward_code(0.2, 1.0), reward_code(1.0, 0.5), reward_code(1.0, 0.05)
    script = [
        f"```python\n{weak}```",
        f"```python\n{better}```",
        f"```python\n{best}```",
        f"```python\n{reward_code(1.0, 0.05, ' + np.log(observation[:, 0])')}```",
    ]
    trained = []
    with FakeLLMServer(queue(script)) as server:
        result = refine_reward(
            SPEC,
            client_for(server, tmp_path),
            scripted_trainer(trained),
            iterations=2,
            samples=2,
            repair_rounds=0,
            config=FAST,
        )
        assert server.calls == 4
        second_round = server.requests[2]["messages"]
    # round 1 keeps the better of the two and continues the chat with its code and a reflection
    assert second_round[-2] == {"role": "assistant", "content": f"```python\n{better}```"}
    reflection = second_round[-1]["content"]
    assert re.search(r"- distance: \[.*\]  max .*, mean .*, min ", reflection)
    assert "- effort:" in reflection and "- task fitness:" in reflection
    assert "rescale" in reflection and "rewrite" in reflection
    assert len(trained) == 3  # the NaN candidate never reaches training
    assert result.program.code == best
    fit = {c.index: c.score.fitness for c in result.candidates if c.score is not None}
    assert fit[2] > fit[1] > fit[0]
    assert result.metrics["programs/best_fitness"] == pytest.approx(fit[2])
    assert result.program.component_names == ("distance", "effort")
    assert result.provenance["rounds"][0]["best"] == 1 and "reflection" in result.provenance["rounds"][0]


def test_training_failure_of_a_program_is_a_failed_candidate(tmp_path):
    flaky = reward_code(1.0, 0.1).replace(
        "    return reward",
        "    if observation.shape[0] > 100:\n        while True:\n            pass\n    return reward",
    )
    with FakeLLMServer(queue([f"```python\n{flaky}```"])) as server:
        result = refine_reward(
            SPEC,
            client_for(server, tmp_path),
            scripted_trainer([]),
            samples=1,
            repair_rounds=0,
            config=FAST.replace(timeout=1.0),
        )
    assert result.program is None
    assert "failed during training: timeout" in result.candidates[0].error


def routed(designs, critic_answers, analysis):
    state = {"design": 0, "critic": 0}

    def respond(req, i):
        system = req["messages"][0]["content"]
        if "careful reviewer" in system:
            state["critic"] += 1
            return critic_answers[state["critic"] - 1]
        if "analyze reinforcement-learning trajectories" in system:
            return analysis
        state["design"] += 1
        return designs[state["design"] - 1]

    return respond


def test_auto_mc_reward_critic_and_trajectory_analyzer(tmp_path):
    sparse_dense = (
        "import numpy as np\ndef compute_reward(observation, action, next_observation):\n"
        "    d0 = np.linalg.norm(observation[:, 0:2], axis=1)\n    d1 = np.linalg.norm(next_observation[:, 0:2], axis=1)\n"
        "    sparse = np.where(d1 < 0.05, 1.0, 0.0)\n    dense = d0 - d1\n"
        "    return np.sign(sparse) * 1.0 + np.sign(dense) * 0.1, {'sparse': sparse, 'dense': dense}\n"
    )
    designs = [
        f"```python\n{reward_code(1.0, -1.0)}```",
        f"```python\n{sparse_dense}```",
        f"```python\n{sparse_dense}```",
    ]
    critic = [
        json.dumps({"ok": False, "issues": ["effort is rewarded instead of penalized"]}),
        json.dumps({"ok": True, "issues": []}),
        json.dumps({"ok": True, "issues": []}),
    ]
    analysis = json.dumps({"causes": ["stops short of the origin"], "suggestions": ["reward the last few centimetres"]})
    with FakeLLMServer(routed(designs, critic, analysis)) as server:
        result = refine_reward(
            SPEC,
            client_for(server, tmp_path),
            scripted_trainer([]),
            style="auto_mc",
            iterations=2,
            samples=1,
            repair_rounds=1,
            critic=True,
            analyzer=True,
            config=FAST,
        )
        msgs = [r["messages"] for r in server.requests]
    first = result.candidates[0]
    assert [c["ok"] for c in first.critic] == [False, True]
    assert first.attempts[0].report.failure_kind == "critic"
    # the designer saw the critic's issue as feedback, and its prompt asked for sparse and dense parts
    designer_turns = [m for m in msgs if "reward engineer" in m[0]["content"]]
    assert "effort is rewarded instead of penalized" in designer_turns[1][-1]["content"]
    assert '"sparse"' in designer_turns[0][1]["content"]
    analyzer_prompt = [m for m in msgs if "analyze reinforcement-learning" in m[0]["content"]][0][1]["content"]
    assert "These episodes of the current policy failed" in analyzer_prompt and "position=" in analyzer_prompt
    reflection = designer_turns[-1][-1]["content"]
    assert "Likely causes: stops short of the origin" in reflection and "Suggestions: reward the last few" in reflection
    assert result.program is not None and set(result.program.component_names) == {"sparse", "dense"}
    assert result.provenance["rounds"][0]["analysis"]["causes"] == ["stops short of the origin"]


def test_text2reward_prompt_has_pythonic_abstraction_and_examples(tmp_path):
    example = "def compute_reward(observation, action, next_observation):\n    return -abs(observation[:, 0]), {}"
    with FakeLLMServer(queue([f"```python\n{reward_code(1, 0.1)}```"])) as server:
        result = refine_reward(
            SPEC, client_for(server, tmp_path), None, style="text2reward", samples=1, examples=[example], config=FAST
        )
        prompt = server.requests[0]["messages"][1]["content"]
    assert "class Observation:" in prompt and "position: np.ndarray  # shape (2,)" in prompt
    assert "Examples of reward code" in prompt and "abs(observation[:, 0])" in prompt
    assert result.program is not None and result.provenance["params"]["selection"] == "first passing candidate"


# ---------------------------------------------------------------------- CALM


def test_calm_subgoals_and_per_transition_labels(tmp_path):
    goals = {
        "subgoals": [
            {"name": "near_origin", "description": "the point is within 0.1 of the origin"},
            {"name": "stopped", "description": "speed below 0.05"},
        ]
    }

    def respond(req, i):
        text = req["messages"][-1]["content"]
        if "Decompose the task" in text:
            return "Plan:\n```json\n" + json.dumps(goals) + "\n```"
        nxt = text.split("next observation:")[1]
        pos = json.loads(re.search(r"position=(\[[^\]]*\])", nxt).group(1))
        vel = json.loads(re.search(r"velocity=(\[[^\]]*\])", nxt).group(1))
        achieved = []
        if np.hypot(*pos) < 0.1:
            achieved.append("near_origin")
        if np.hypot(*vel) < 0.05:
            achieved.append("stopped")
        return json.dumps({"achieved": achieved + ["not_a_subgoal"]})

    obs = np.array([[0.5, 0.5, 0.1, 0.1], [0.2, 0.0, 0.0, 0.0], [0.05, 0.0, 0.01, 0.0]])
    nxt = np.array([[0.2, 0.0, 0.0, 0.0], [0.05, 0.0, 0.01, 0.0], [0.0, 0.0, 0.0, 0.0]])
    act = np.zeros((3, 2))
    with FakeLLMServer(respond) as server:
        client = client_for(server, tmp_path, max_concurrency=3)
        sub = calm_subgoals(client, SPEC)
        labels = calm_label_transitions(client, SPEC, sub, obs, act, nxt)
        assert server.calls == 4
        again = calm_label_transitions(client_for(server, tmp_path), SPEC, sub, obs, act, nxt)
        assert server.calls == 4  # cached
    assert [g["name"] for g in sub] == ["near_origin", "stopped"]
    # next states: (0.2, 0)/speed 0 -> stopped; (0.05, 0)/speed 0.01 -> both; origin/0 -> both
    assert labels.achieved.tolist() == [[False, True], [True, True], [True, True]]
    np.testing.assert_array_equal(again.achieved, labels.achieved)
    # first achievement per episode only: one episode of three steps -> 1, 1, 0
    assert calm_rewards(labels, episode_ids=[0, 0, 0]).tolist() == [1.0, 1.0, 0.0]
    assert calm_rewards(labels, bonus=0.5).tolist() == [0.5, 1.0, 1.0]


def test_program_save_load_and_tamper_check(tmp_path):
    prog = Program(code=DIST, kind="factors", obs_dim=4, act_dim=2, num_factors=1, origin="hand-written")
    prog.save(tmp_path / "p")
    assert load_program(tmp_path / "p") == prog.replace(meta={"path": str(tmp_path / "p" / "program.py")})
    text = (tmp_path / "p" / "program.py").read_text()
    assert text.startswith("# creditlab program (factors: evaluation_func) -- written by hand")
    (tmp_path / "p" / "program.py").write_text(text.replace("-d", "d"))
    with pytest.raises(ValueError, match="edited after saving"):
        load_program(tmp_path / "p")
    bare = tmp_path / "r.py"
    bare.write_text(reward_code(1, 0))
    assert load_program(bare).kind == "reward"
    bare.write_text("def nothing():\n    pass\n")
    with pytest.raises(ValueError, match="cannot tell the program kind"):
        load_program(bare)
