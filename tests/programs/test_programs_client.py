"""The LLM client against a scripted OpenAI-compatible server on loopback (the real openai path)."""

import json
import threading
import time

import pytest

from creditlab.programs import BudgetExceededError, LLMClient, LLMConfig, LLMError, ResponseCache
from creditlab.programs.client import cache_scope, request_key
from tests.helpers.fake_llm_server import FakeLLMServer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}]


def client_for(server, tmp_path, **kw):
    cfg = dict(
        model="fake-model",
        base_url=server.url,
        api_key="sk-test-123",
        cache_dir=str(tmp_path / "cache"),
        backoff=0.01,
        backoff_max=0.05,
        timeout=10,
    )
    cfg.update(kw)
    return LLMClient(LLMConfig(**cfg))


def test_completion_usage_and_cost(tmp_path):
    with FakeLLMServer(lambda req, i: "hello there world") as server:
        client = client_for(server, tmp_path, price_input=2.0, price_output=10.0)
        c = client.complete(MSGS, temperature=0.5, max_tokens=50)
        assert server.calls == 1
        sent = server.requests[0]
        assert sent["model"] == "fake-model" and sent["temperature"] == 0.5 and sent["max_tokens"] == 50
        assert "sample" not in sent  # bookkeeping stays local
        assert server.auth_headers[0] == "Bearer sk-test-123"
    # the fake server counts words: prompt "be brief" + "say hi" = 4 tokens, completion 3 tokens
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.cached) == ("hello there world", 4, 3, False)
    assert c.cost == pytest.approx((4 * 2.0 + 3 * 10.0) / 1e6)
    m = client.metrics
    assert m["llm/calls"] == 1 and m["llm/prompt_tokens"] == 4 and m["llm/cost"] == pytest.approx(c.cost)


def test_cache_second_run_makes_no_http_call(tmp_path):
    with FakeLLMServer(lambda req, i: f"answer {i}") as server:
        first = client_for(server, tmp_path)
        a = [first.complete(MSGS, sample=s).text for s in range(3)]
        assert server.calls == 3 and a == ["answer 0", "answer 1", "answer 2"]  # samples are distinct entries
        second = client_for(server, tmp_path)  # a new process would see the same folder
        b = [second.complete(MSGS, sample=s).text for s in range(3)]
        assert server.calls == 3, "the cached run made HTTP calls"
    assert a == b
    assert second.metrics["llm/cache_hits"] == 3 and second.metrics["llm/calls"] == 0
    # a fully cached run needs no endpoint at all: the server is gone, its URL is only part of the key
    offline = LLMClient(LLMConfig(model="fake-model", base_url=server.url, cache_dir=str(tmp_path / "cache")))
    assert offline.complete(MSGS, sample=1).text == "answer 1"


def test_cache_key_covers_the_full_request_but_the_files_hold_neither_key_nor_url(tmp_path):
    with FakeLLMServer(lambda req, i: "x") as server:
        c = client_for(server, tmp_path)
        base = c.request(MSGS)
        assert request_key(base) != request_key(c.request(MSGS, temperature=0.2))
        assert request_key(base) != request_key(c.request(MSGS[:1]))
        assert request_key(base) != request_key(c.request(MSGS, sample=1))
        assert request_key(base) != request_key(c.request(MSGS, top_p=0.5))
        c.complete(MSGS)
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "sk-test-123" not in text and "127.0.0.1" not in text
    assert json.loads(text)["request"]["messages"] == MSGS


def test_two_servers_with_the_same_model_name_keep_their_own_answers(tmp_path):
    # issue 10, defect 18: the endpoint is part of the cache key
    with FakeLLMServer(lambda req, i: "from server A") as a, FakeLLMServer(lambda req, i: "from server B") as b:
        assert client_for(a, tmp_path).complete(MSGS).text == "from server A"
        assert client_for(b, tmp_path).complete(MSGS).text == "from server B"
        assert (a.calls, b.calls) == (1, 1)
        # the same endpoint spelled differently (trailing slash, host case) is the same cache entry
        respelled = a.url.replace("http://", "HTTP://") + "/"
        assert client_for(a, tmp_path, base_url=respelled).complete(MSGS).text == "from server A"
        assert a.calls == 1
        # an explicit scope shares answers between endpoints on purpose
        assert client_for(a, tmp_path, cache_scope="team").complete(MSGS).text == "from server A"
        assert client_for(b, tmp_path, cache_scope="team").complete(MSGS).text == "from server A"
        assert (a.calls, b.calls) == (2, 1)


def test_cache_scope_normalizes_the_url():
    assert cache_scope(LLMConfig(base_url="HTTP://Host:8000/v1/")) == cache_scope(
        LLMConfig(base_url="http://host:8000/v1")
    )
    assert cache_scope(LLMConfig(base_url="http://host:8000/v1")) != cache_scope(
        LLMConfig(base_url="http://host:8001/v1")
    )
    assert cache_scope(LLMConfig()) == "url:https://api.openai.com/v1"
    assert "pw" not in cache_scope(LLMConfig(base_url="http://user:pw@host/v1"))


def test_damaged_cache_entry_is_a_miss(tmp_path):
    with FakeLLMServer(lambda req, i: f"v{i}") as server:
        c = client_for(server, tmp_path)
        c.complete(MSGS)
        (f,) = list((tmp_path / "cache").rglob("*.json"))
        f.write_text("{not json")
        assert client_for(server, tmp_path).complete(MSGS).text == "v1"
        assert server.calls == 2
    assert ResponseCache(tmp_path / "cache").get("0" * 64) is None


def test_retries_with_backoff_on_429_and_5xx(tmp_path):
    script = [(429, "slow down"), (503, "busy"), (500, "oops"), "finally"]
    with FakeLLMServer(lambda req, i: script[i]) as server:
        c = client_for(server, tmp_path)
        out = c.complete(MSGS)
        assert server.calls == 4
    assert out.text == "finally" and out.retries == 3
    assert c.metrics["llm/retries"] == 3 and c.metrics["llm/failures"] == 0


def test_gives_up_after_max_retries_and_does_not_retry_400(tmp_path):
    with FakeLLMServer(lambda req, i: (503, "down")) as server:
        c = client_for(server, tmp_path, max_retries=2)
        with pytest.raises(LLMError, match="after 2 retries: HTTP 503"):
            c.complete(MSGS)
        assert server.calls == 3
    with FakeLLMServer(lambda req, i: (400, "bad request")) as server:
        c = client_for(server, tmp_path, max_retries=5)
        with pytest.raises(LLMError, match="HTTP 400"):
            c.complete(MSGS)
        assert server.calls == 1
    assert c.metrics["llm/failures"] == 1


def test_connection_refused_is_retried_then_reported(tmp_path):
    c = LLMClient(
        LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", cache_dir="", max_retries=1, backoff=0.01, timeout=2)
    )
    with pytest.raises(LLMError, match="APIConnectionError"):
        c.complete(MSGS)


def test_budget_caps_stop_requests(tmp_path):
    with FakeLLMServer(lambda req, i: "one two three four") as server:
        c = client_for(server, tmp_path, price_input=1e6, price_output=1e6, max_cost=5.0)
        c.complete(MSGS, sample=0)  # 4 + 4 tokens at 1 per token = 8 > 5
        with pytest.raises(BudgetExceededError, match="cost budget"):
            c.complete(MSGS, sample=1)
        assert server.calls == 1
        c.complete(MSGS, sample=0)  # cached answers stay free
        t = client_for(server, tmp_path, cache_dir="", max_tokens_total=5)
        t.complete(MSGS)
        with pytest.raises(BudgetExceededError, match="token budget"):
            t.complete(MSGS)


def test_concurrency_limit_and_order(tmp_path):
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(req, i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        with lock:
            active[0] -= 1
        return req["messages"][-1]["content"].upper()

    with FakeLLMServer(slow) as server:
        c = client_for(server, tmp_path, max_concurrency=2, cache_dir="")
        reqs = [{"messages": [{"role": "user", "content": f"msg{k}"}]} for k in range(6)]
        out = c.complete_many(reqs)
        assert server.calls == 6
    assert [o.text for o in out] == [f"MSG{k}" for k in range(6)]
    assert peak[0] == 2


def test_rate_limit_spaces_request_starts(tmp_path):
    with FakeLLMServer(lambda req, i: "ok") as server:
        c = client_for(server, tmp_path, cache_dir="", requests_per_minute=600)  # one every 0.1 s
        t0 = time.perf_counter()
        for k in range(4):
            c.complete(MSGS, sample=k)
        assert time.perf_counter() - t0 >= 0.3 - 1e-3
        assert server.calls == 4


def test_configuration_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CREDITLAB_LLM_MODEL", "env-model")
    monkeypatch.setenv("CREDITLAB_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("CREDITLAB_LLM_API_KEY", "sk-env-secret")
    monkeypatch.setenv("CREDITLAB_LLM_CACHE", str(tmp_path / "c"))
    cfg = LLMClient().config
    assert (cfg.model, cfg.base_url, cfg.api_key, cfg.cache_dir) == (
        "env-model",
        "http://127.0.0.1:1/v1",
        "sk-env-secret",
        str(tmp_path / "c"),
    )
    assert "sk-env-secret" not in repr(cfg)
    monkeypatch.delenv("CREDITLAB_LLM_MODEL")
    with pytest.raises(LLMError, match="no model configured"):
        LLMClient(cache_dir="").complete(MSGS)


def test_config_validation():
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMConfig(max_concurrency=0)
    with pytest.raises(ValueError, match="messages\\[0\\]"):
        LLMClient(LLMConfig(model="m", cache_dir="")).request([{"role": "robot", "content": "x"}])
