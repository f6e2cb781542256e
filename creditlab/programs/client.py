"""A small chat client for any OpenAI-compatible endpoint: retries, rate limits, costs, a disk cache.

Configuration comes from :class:`LLMConfig` fields or, when a field is left unset, the environment:

=============================  =========================================================================
``CREDITLAB_LLM_BASE_URL``     endpoint (else ``OPENAI_BASE_URL``, else the official OpenAI API)
``CREDITLAB_LLM_MODEL``        model name
``CREDITLAB_LLM_API_KEY``      key (else ``OPENAI_API_KEY``); never written to the cache or provenance
``CREDITLAB_LLM_CACHE``        cache folder (else ``$XDG_CACHE_HOME/creditlab/llm`` or ``~/.cache/...``)
``CREDITLAB_LLM_CACHE_SCOPE``  share cached answers between endpoints under this name (see below)
=============================  =========================================================================

Every request is cached on disk under the SHA-256 of the full request (model, messages, sampling
parameters and a ``sample`` index that tells repeated samples of one prompt apart) and of the
endpoint it goes to, so running the same pipeline again makes no HTTP call and returns the same
answers, and a second server that serves a model under the same name never replays the first
one's answers. The endpoint is the normalized base URL (scheme and host lower-cased, no trailing
``/``, no user info), or ``LLMConfig.cache_scope`` when set: clients with the same scope share
their cached answers on purpose. The key (API key) is never part of the cache, and the URL is
hashed, not written. A recorded cache replays offline: a fully cached run with the same base URL
makes no connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from ..atomic import write_json
from ..errors import RangeError
from .errors import BudgetExceededError, LLMError

__all__ = ["LLMConfig", "LLMClient", "Completion", "ResponseCache", "cache_scope", "request_key"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
"""The endpoint the ``openai`` package uses when no base URL is configured."""


@dataclass(frozen=True)
class LLMConfig:
    """Endpoint, model, limits and prices of an :class:`LLMClient`.

    Attributes:
        model: model name sent to the endpoint.
        base_url: OpenAI-compatible base URL (``http://127.0.0.1:8000/v1`` for a local server).
        api_key: the key; leave ``None`` to read it from the environment. Never cached or saved.
        cache_dir: folder of the response cache; ``""`` disables the cache.
        cache_scope: name under which cached answers are shared between endpoints (None: each
            endpoint URL has its own answers; see :func:`cache_scope`).
        max_retries: retries after a retryable failure (connection, timeout, 429, 5xx).
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped at ``backoff_max``.
        backoff_max: largest delay between retries.
        timeout: seconds allowed for one HTTP request.
        max_concurrency: requests in flight at once.
        requests_per_minute: start at most this many requests per minute (``None``: no limit).
        price_input, price_output: price per million prompt / completion tokens, for cost accounting.
        max_cost: refuse new requests once this much has been spent (same unit as the prices).
        max_tokens_total: refuse new requests once this many tokens have been used.
        max_tokens: completion length limit of requests that set none (``None``: the endpoint's
            default, which for a local server can be long; part of the cache key when set).
    """

    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    cache_dir: str | None = None
    cache_scope: str | None = None
    max_retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0
    timeout: float = 120.0
    max_concurrency: int = 4
    requests_per_minute: float | None = None
    price_input: float = 0.0
    price_output: float = 0.0
    max_cost: float | None = None
    max_tokens_total: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise RangeError(f"LLMConfig.max_retries must be an int >= 0; got {self.max_retries!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise RangeError(f"LLMConfig.max_concurrency must be an int >= 1; got {self.max_concurrency!r}")
        for name in ("backoff", "backoff_max", "price_input", "price_output"):
            if getattr(self, name) < 0:
                raise RangeError(f"LLMConfig.{name} must be >= 0; got {getattr(self, name)!r}")
        if self.timeout <= 0:
            raise RangeError(f"LLMConfig.timeout must be > 0; got {self.timeout!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise RangeError(f"LLMConfig.max_tokens must be an int >= 1 or None; got {self.max_tokens!r}")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise RangeError(f"LLMConfig.requests_per_minute must be > 0 or None; got {self.requests_per_minute!r}")

    def resolved(self) -> LLMConfig:
        """Fill unset fields from the environment (see the module docstring)."""
        env = os.environ
        cache = self.cache_dir
        if cache is None:
            cache = env.get("CREDITLAB_LLM_CACHE") or str(
                Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "creditlab" / "llm"
            )
        return replace(
            self,
            model=self.model or env.get("CREDITLAB_LLM_MODEL"),
            base_url=self.base_url or env.get("CREDITLAB_LLM_BASE_URL") or env.get("OPENAI_BASE_URL"),
            api_key=self.api_key or env.get("CREDITLAB_LLM_API_KEY") or env.get("OPENAI_API_KEY"),
            cache_dir=cache,
            cache_scope=self.cache_scope if self.cache_scope is not None else env.get("CREDITLAB_LLM_CACHE_SCOPE"),
        )


class Completion(NamedTuple):
    """One chat completion.

    Attributes:
        text: the answer.
        model: the model that answered (as reported by the endpoint).
        prompt_tokens, completion_tokens: token counts reported by the endpoint (0 if not reported).
        cost: cost of this call from the configured prices (0 for a cache hit).
        cached: True when the answer came from the cache (no HTTP call).
        seconds: wall time of the call including retries.
        key: the cache key of the request.
        finish_reason: as reported (``stop``, ``length`` ...).
        retries: retries this call needed.
    """

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cached: bool
    seconds: float
    key: str
    finish_reason: str | None
    retries: int


def request_key(request: dict[str, Any], scope: str | None = None) -> str:
    """SHA-256 of the canonical JSON of a request and the endpoint ``scope`` it is sent to (the cache key).

    ``scope=None`` hashes the request alone (the key of caches written before the endpoint was
    part of it); :class:`LLMClient` always passes :func:`cache_scope` of its configuration.
    """
    payload: Any = request if scope is None else {"endpoint": scope, "request": request}
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def cache_scope(config: LLMConfig) -> str:
    """What the cache key records about the endpoint: ``config.cache_scope`` when set, else the
    normalized base URL (the official OpenAI endpoint when none is configured).

    Example:
        >>> cache_scope(LLMConfig(base_url="HTTP://User:pw@LocalHost:8000/v1/"))
        'url:http://localhost:8000/v1'
        >>> cache_scope(LLMConfig(base_url="http://a:8000/v1", cache_scope="team"))
        'scope:team'
    """
    if config.cache_scope is not None:
        return f"scope:{config.cache_scope}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit((config.base_url or OPENAI_BASE_URL).strip())
    host = (parts.hostname or "").lower()
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return "url:" + urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, ""))


class ResponseCache:
    """One JSON file per request under ``folder/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is a miss; the next put replaces it
        return data if isinstance(data, dict) and isinstance(data.get("text"), str) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        write_json(self._path(key), record, ensure_ascii=False)


_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMClient:
    """Chat completions from an OpenAI-compatible endpoint (the ``openai`` package), cached and accounted.

    Args:
        config: :class:`LLMConfig`; unset fields come from the environment.

    Thread-safe: :meth:`complete_many` runs requests concurrently up to ``max_concurrency``.
    The HTTP client is created on the first cache miss, so a fully cached run needs no endpoint.
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        cfg = replace(config or LLMConfig(), **overrides) if overrides else (config or LLMConfig())
        self.config = cfg.resolved()
        self.cache = ResponseCache(self.config.cache_dir) if self.config.cache_dir else None
        self._client = None
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.config.max_concurrency)
        self._next_start = 0.0
        self.calls = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.cost_saved = 0.0
        self.retries = 0
        self.failures = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------ accounting

    @property
    def metrics(self) -> dict[str, float]:
        """Totals so far: ``llm/calls`` (HTTP requests that succeeded), ``llm/cache_hits``, tokens, cost."""
        with self._lock:
            return {
                "llm/calls": float(self.calls),
                "llm/cache_hits": float(self.cache_hits),
                "llm/prompt_tokens": float(self.prompt_tokens),
                "llm/completion_tokens": float(self.completion_tokens),
                "llm/cost": float(self.cost),
                "llm/cost_saved_by_cache": float(self.cost_saved),
                "llm/retries": float(self.retries),
                "llm/failures": float(self.failures),
                "llm/seconds": float(self.seconds),
            }

    def _price(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.config.price_input + completion_tokens * self.config.price_output) / 1e6

    # ------------------------------------------------------------------ requests

    def request(
        self,
        messages: Sequence[dict[str, str]],
        *,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        sample: int = 0,
        seed: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The canonical request (what is hashed for the cache; ``sample`` is not sent)."""
        if not self.config.model:
            raise LLMError("no model configured: pass LLMConfig(model=...), --model, or set CREDITLAB_LLM_MODEL")
        msgs = []
        for i, m in enumerate(messages):
            if (
                not isinstance(m, dict)
                or m.get("role") not in ("system", "user", "assistant")
                or not isinstance(m.get("content"), str)
            ):
                raise RangeError(f"messages[{i}] must be {{'role': system|user|assistant, 'content': str}}; got {m!r}")
            msgs.append({"role": m["role"], "content": m["content"]})
        req: dict[str, Any] = {
            "model": self.config.model,
            "messages": msgs,
            "temperature": float(temperature),
            "sample": int(sample),
        }
        if max_tokens is None:
            max_tokens = self.config.max_tokens
        if max_tokens is not None:
            req["max_tokens"] = int(max_tokens)
        if seed is not None:
            req["seed"] = int(seed)
        if extra:
            req["extra"] = extra
        return req

    def complete(
        self,
        messages: Sequence[dict[str, str]],
        *,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        sample: int = 0,
        seed: int | None = None,
        **extra: Any,
    ) -> Completion:
        """One chat completion, from the cache when the same request was made before.

        Args:
            messages: the chat, ``[{"role": ..., "content": ...}, ...]``.
            temperature: sampling temperature.
            max_tokens: completion length limit (endpoint default if ``None``).
            sample: index of this sample among repeated samples of the same prompt; part of the
                cache key only (so n samples at temperature 1 are n distinct cache entries).
            seed: sampling seed forwarded to endpoints that support it.
            **extra: other request fields forwarded as is (e.g. ``top_p``).

        Raises:
            LLMError: the endpoint failed after all retries, or refused the request.
            BudgetExceededError: the cost or token budget is spent (checked before the request).
        """
        req = self.request(messages, temperature=temperature, max_tokens=max_tokens, sample=sample, seed=seed, **extra)
        key = request_key(req, cache_scope(self.config))
        t0 = time.perf_counter()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                saved = self._price(int(hit.get("prompt_tokens", 0)), int(hit.get("completion_tokens", 0)))
                with self._lock:
                    self.cache_hits += 1
                    self.cost_saved += saved
                return Completion(
                    hit["text"],
                    str(hit.get("model", req["model"])),
                    int(hit.get("prompt_tokens", 0)),
                    int(hit.get("completion_tokens", 0)),
                    0.0,
                    True,
                    time.perf_counter() - t0,
                    key,
                    hit.get("finish_reason"),
                    0,
                )
        self._check_budget()
        text, model, pt, ct, finish, retries = self._http(req)
        cost = self._price(pt, ct)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.calls += 1
            self.prompt_tokens += pt
            self.completion_tokens += ct
            self.cost += cost
            self.retries += retries
            self.seconds += seconds
        if self.cache is not None:
            self.cache.put(
                key,
                {
                    "request": req,
                    "text": text,
                    "model": model,
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                    "finish_reason": finish,
                    "created": time.time(),
                },
            )
        return Completion(text, model, pt, ct, cost, False, seconds, key, finish, retries)

    def complete_many(self, requests: Sequence[dict[str, Any]]) -> list[Completion | LLMError]:
        """Run several :meth:`complete` calls concurrently (keyword dicts); results keep the order.

        A request that fails yields its :class:`LLMError` in place of a completion.
        """

        def one(kw: dict[str, Any]) -> Completion | LLMError:
            try:
                return self.complete(**kw)
            except LLMError as exc:
                return exc

        if len(requests) <= 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(requests))) as pool:
            return list(pool.map(one, requests))

    def _check_budget(self) -> None:
        c = self.config
        with self._lock:
            if c.max_cost is not None and self.cost >= c.max_cost:
                raise BudgetExceededError(
                    f"the cost budget is spent ({self.cost:.4g} >= max_cost {c.max_cost:g}); no request sent"
                )
            used = self.prompt_tokens + self.completion_tokens
            if c.max_tokens_total is not None and used >= c.max_tokens_total:
                raise BudgetExceededError(
                    f"the token budget is spent ({used} >= max_tokens_total {c.max_tokens_total}); no request sent"
                )

    def _openai(self):
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:  # pragma: no cover - openai is in the llm extra
                    raise LLMError(
                        "the openai package is needed: from the creditlab repository, `bash scripts/install.sh` "
                        "or `pip install -e '.[llm]'`"
                    ) from exc
                self._client = openai.OpenAI(
                    api_key=self.config.api_key or "not-needed",
                    base_url=self.config.base_url,
                    max_retries=0,
                    timeout=self.config.timeout,
                )
            return self._client

    def _wait_rate(self) -> None:
        rpm = self.config.requests_per_minute
        if not rpm:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 60.0 / rpm
        if start > now:
            time.sleep(start - now)

    def _http(self, req: dict[str, Any]) -> tuple[str, str, int, int, str | None, int]:
        import openai

        client = self._openai()
        body = {k: v for k, v in req.items() if k not in ("sample", "extra")}
        body.update(req.get("extra", {}))
        attempt = 0
        while True:
            self._wait_rate()
            try:
                with self._slots:
                    resp = client.chat.completions.create(**body)
                choice = resp.choices[0] if resp.choices else None
                text = choice.message.content if choice is not None and choice.message is not None else None
                if not isinstance(text, str):
                    raise LLMError("the endpoint returned no message content")
                usage = resp.usage
                pt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
                ct = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
                return text, str(resp.model or req["model"]), pt, ct, getattr(choice, "finish_reason", None), attempt
            except openai.APIStatusError as exc:
                status = exc.status_code
                retry = status in _RETRYABLE_STATUS
                err = f"HTTP {status} from the endpoint: {str(exc)[:300]}"
                delay_hint = _retry_after(exc)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                retry, err, delay_hint = True, f"{type(exc).__name__}: {str(exc)[:300]}", None
            except openai.OpenAIError as exc:
                retry, err, delay_hint = False, f"{type(exc).__name__}: {str(exc)[:300]}", None
            if not retry or attempt >= self.config.max_retries:
                with self._lock:
                    self.failures += 1
                    self.retries += attempt
                tail = f" after {attempt} retries" if attempt else ""
                raise LLMError(f"chat completion failed{tail}: {err}")
            delay = min(self.config.backoff_max, self.config.backoff * (2**attempt)) * (0.5 + 0.5 * random.random())
            if delay_hint is not None:
                delay = min(max(delay, delay_hint), self.config.backoff_max)
            time.sleep(delay)
            attempt += 1


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
