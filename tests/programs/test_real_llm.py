"""The real pretrained SmolLM2-135M-Instruct end to end: the local OpenAI-compatible server
(`creditlab llm serve`), `creditlab program generate` against it, and likelihood rewards.

The model writes wrong code often: the end-to-end test checks that real answers go through
validation, repair rounds, the sandbox and selection, and that what the run reports is consistent
with what happened -- not that the model succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.helpers.real_llm import load_real, real_model_folder  # noqa: F401  (session fixture)

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SPEC = "examples/programs/pendulum.yaml"
MAX_TOKENS = 160


@pytest.fixture(scope="module")
def server(real_model_folder):  # noqa: F811
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from creditlab.programs.local_llm import LocalLLMServer

    with LocalLLMServer(real_model_folder, backend="transformers", name="smollm2", port=0, threads=1) as s:
        yield s


def _chat(base_url, content, **kw):
    body = {"model": "smollm2", "messages": [{"role": "user", "content": content}], **kw}
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def test_server_answers_as_the_model_does(server, real_model_folder, one_torch_thread):  # noqa: F811
    """Greedy decoding through the server equals HF generate on the same weights in this process."""
    import torch

    question = "What is the capital of France? Answer in one sentence."
    answer = _chat(server.base_url, question, temperature=0.0, max_tokens=24)
    model, tok = load_real(real_model_folder)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert answer["choices"][0]["message"]["content"].strip() == expected.strip()
    assert answer["usage"]["prompt_tokens"] == ids.shape[1] and 0 < answer["usage"]["completion_tokens"] <= 24
    assert "Paris" in expected  # it is a real pretrained model


def test_program_generate_end_to_end(server, tmp_path, capsys):
    """`creditlab program generate` with real answers: validation, one repair round, the sandbox,
    selection by short PPO runs; then the same command again replays the cache."""
    from creditlab.cli import main

    argv = [
        "program",
        "generate",
        SPEC,
        "--kind",
        "reward",
        "--out",
        str(tmp_path / "out"),
        "--model",
        server.model_name,
        "--base-url",
        server.base_url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--n",
        "2",
        "--rounds",
        "1",
        "--max-tokens",
        str(MAX_TOKENS),
        "--concurrency",
        "1",
        "--timesteps",
        "1024",
        "--timeout",
        "5",
        "--request-timeout",
        "900",
    ]
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    cands = prov["candidates"]
    assert len(cands) == 2
    attempts = [len(c["attempts"]) for c in cands]
    passed = [c["ok"] for c in cands]
    for c in cands:
        first = c["attempts"][0]
        assert first["response"]  # a real answer, whatever it says
        assert first["completion"]["completion_tokens"] <= MAX_TOKENS
        # a failed first answer got exactly one repair round (--rounds 1); a passing one none
        assert len(c["attempts"]) == (1 if first["report"]["ok"] else 2)
        assert c["ok"] == c["attempts"][-1]["report"]["ok"]
        for a in c["attempts"]:
            assert a["report"]["ok"] or a["report"]["problems"]  # every rejection says why
        if c["ok"]:  # selection trained PPO on it
            assert c["score"] is not None and np.isfinite(c["score"]["fitness"])
    assert code == (0 if any(passed) else 1)
    assert f"HTTP calls {sum(attempts)}, cache hits 0" in err
    if any(passed):
        assert (tmp_path / "out" / "program.py").is_file()
    # the run's own accounting agrees with what happened
    m = prov["metrics"]
    repairs = sum(n - 1 for n in attempts)
    assert (m["programs/passed"], m["programs/attempts"], m["programs/repairs"]) == (
        sum(passed),
        sum(attempts),
        repairs,
    )
    assert m["llm/calls"] == sum(attempts) and 0 < m["llm/completion_tokens"] <= MAX_TOKENS * sum(attempts)
    with capsys.disabled():
        print(
            f"\nprogram generate with the real model: {sum(passed)}/2 candidates passed, {repairs} repairs, "
            f"{sum(attempts)} answers, tokens {m['llm/prompt_tokens']:.0f}+{m['llm/completion_tokens']:.0f}, "
            f"LLM {m['llm/seconds']:.0f} s, total {seconds:.0f} s; rejections "
            f"{ {k.split('/')[-1]: v for k, v in m.items() if k.startswith('programs/rejected/')} }"
        )
    # the recorded answers replay from the cache: no HTTP call, the same outcome
    assert main(argv[:6] + [str(tmp_path / "out2")] + argv[7:]) == code
    assert f"HTTP calls 0, cache hits {sum(attempts)}" in capsys.readouterr().err


def test_llm_serve_command_prints_the_url_and_stops_cleanly(real_model_folder, tmp_path):  # noqa: F811
    """`creditlab llm serve` on loopback: prints the base URL, answers, stops on SIGTERM with its child."""
    pytest.importorskip("fastapi")
    env = dict(os.environ, CREDITLAB_MODEL_CACHE=str(real_model_folder.parent))
    cli = "import sys; from creditlab.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "llm", "serve", "--backend", "transformers", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), (
            url,
            proc.stderr.read() if proc.poll() else "",
        )
        with urllib.request.urlopen(f"{url}/models", timeout=30) as resp:
            assert "smollm2" in resp.read().decode()
        answer = _chat(url, "Say hi.", max_tokens=4, temperature=0.0)
        assert answer["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 0, err
    assert "model name 'smollm2'" in err
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):  # nothing listens any more: the child went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_serve_refuses_non_loopback_hosts():
    from creditlab.errors import RangeError
    from creditlab.programs.local_llm import LocalLLMServer

    with pytest.raises(RangeError, match="not a loopback address"):
        LocalLLMServer(host="0.0.0.0")
    with pytest.raises(RangeError, match="backend must be one of"):
        LocalLLMServer(backend="vllm").start()


def test_likelihood_reward_on_the_real_model(real_model_folder, one_torch_thread):  # noqa: F811
    """log p(reference | prompt, response) with SmolLM2: agrees with HF's own loss on the same tokens,
    and a response that leads to the reference makes it more likely than one that does not."""
    import torch

    from creditlab.llm.likelihood import _context, reference_log_likelihood

    model, tok = load_real(real_model_folder)
    prompts = ["What is 2 + 3?"] * 3 + ["Which planet is called the red planet?"] * 2
    responses = ["2 + 3 = 5.", "2 + 3 = 7.", "Let me think.", "It is Mars, the fourth planet.", "It is Venus."]
    references = ["5", "5", "5", "Mars", "Mars"]
    out = reference_log_likelihood(model, tok, prompts, responses, references, answer_prefix="\nAnswer: ", batch_size=4)
    assert out.present.all() and np.all(out.num_tokens >= 1)
    for i in range(len(prompts)):
        # independent path: HF's cross-entropy loss with labels only on the reference tokens
        ctx = _context(tok, prompts[i], responses[i], "\nAnswer: ", True)
        stripped = ctx.rstrip(" ")
        ctx_ids = tok(stripped, add_special_tokens=False)["input_ids"]
        ans_ids = tok(ctx[len(stripped) :] + references[i], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx_ids + ans_ids])
        labels = torch.tensor([[-100] * len(ctx_ids) + ans_ids])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        assert out.log_likelihood[i] == pytest.approx(-loss * len(ans_ids), rel=1e-4, abs=1e-4)
        assert out.num_tokens[i] == len(ans_ids)
    # the reward means something: a response with the right answer makes the reference likelier
    # than one with a wrong answer (SmolLM2 also finds "5" likely after "Let me think.": -0.8 vs -2.4)
    assert out.log_likelihood[0] > out.log_likelihood[1] + 1.0
    assert out.log_likelihood[3] > out.log_likelihood[4] + 1.0
    np.testing.assert_allclose(out.mean_log_likelihood, out.log_likelihood / out.num_tokens)


def test_llama_cpp_backend_serves_the_shipped_gguf(server):
    """The llama.cpp backend (a separately built extra, `BACKEND=llama-cpp bash scripts/local-llm.sh`)
    serves the GGUF file itself: same chat template and prompt tokens as transformers, a real answer."""
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is a separately built extra (creditlab[llama-cpp]); see docs/programs.md"
    )
    from creditlab.programs.local_llm import LocalLLMServer

    question = "What is the capital of France? Answer in one sentence."
    with LocalLLMServer("smollm2", backend="llama-cpp", port=0, threads=1) as cpp:
        assert cpp.backend == "llama-cpp" and cpp.model_name == "smollm2"
        answer = _chat(cpp.base_url, question, temperature=0.0, max_tokens=24)
    reference = _chat(server.base_url, question, temperature=0.0, max_tokens=1)
    assert answer["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]
    assert "Paris" in answer["choices"][0]["message"]["content"]
