"""OpenAI-compatible chat-completions backend over plain HTTP (standard library only).

Works against api.openai.com, vLLM, llama.cpp, TGI and `harness serve`. Transient failures (429, 5xx, refused or
dropped connections, timeouts) are retried with exponential backoff, honouring the server's Retry-After; any
other 4xx fails at once. The API key is read from an environment variable at request time and is never stored
on the backend, so it cannot leak through `model_id`, `repr`, logs or exception text.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from harness.types import Chat, GenerationParams

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# OpenAI's documented maximum for top_logprobs; a continuation outside this many candidates scores -inf.
TOP_LOGPROBS = 20
# A server asking us to wait longer than this is treated as "down": waiting hours inside a run helps nobody.
MAX_RETRY_AFTER_S = 120.0

T = TypeVar("T")
R = TypeVar("R")


class OpenAIError(RuntimeError):
    """A request to an OpenAI-compatible server failed; the message names the status, URL and server's reason."""

    def __init__(self, message: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class _Attempt(Exception):
    """One failed attempt: what went wrong, whether another try may help, and how long the server asked to wait."""

    def __init__(self, reason: str, status: int | None, retryable: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def server_message(body: bytes) -> str:
    """Extract the human-readable reason from an error body (OpenAI, FastAPI or plain-text shapes).

    >>> server_message(b'{"error": {"message": "Invalid API key", "type": "auth"}}')
    'Invalid API key'
    >>> server_message(b'upstream timed out')
    'upstream timed out'
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or error
        if isinstance(error, str):
            return error[:500]
    return text[:500]


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, or `Retry-After` as seconds or HTTP date).

    >>> retry_after_seconds({"Retry-After": "2"})
    2.0
    >>> retry_after_seconds({}) is None
    True
    """
    millis = headers.get("retry-after-ms")
    value = headers.get("Retry-After")
    try:
        if millis is not None:
            seconds = float(millis) / 1000
        elif value is None:
            return None
        else:
            seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def match_logprob(top: Sequence[dict[str, Any]], continuation: str) -> float:
    """Log-probability of `continuation` among one position's top_logprobs entries, or -inf if absent.

    An exact token match wins; otherwise tokens are compared with surrounding whitespace stripped (so " Yes"
    counts for "Yes") and the most likely such token is taken.

    >>> match_logprob([{"token": " Yes", "logprob": -0.5}, {"token": "No", "logprob": -1.0}], "Yes")
    -0.5
    >>> match_logprob([{"token": "No", "logprob": -1.0}], "Maybe")
    -inf
    """
    exact = [e["logprob"] for e in top if e["token"] == continuation]
    if exact:
        return float(exact[0])
    loose = [e["logprob"] for e in top if e["token"].strip() == continuation.strip()]
    return float(max(loose)) if loose else -math.inf


class OpenAIBackend:
    """Generation and next-token scoring through any OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        concurrency: int = 4,
    ) -> None:
        if max_retries < 0 or concurrency < 1 or timeout <= 0:
            raise ValueError("OpenAIBackend needs max_retries >= 0, concurrency >= 1 and timeout > 0")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.model_id = f"openai:{self.base_url}:{model}"

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Return one assistant reply per chat, one request each, `concurrency` requests at a time."""
        body = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)

        def one(chat: Chat) -> str:
            response = self.chat_completion({**body, "messages": list(chat)})
            content = self._field(response, lambda r: r["choices"][0]["message"]["content"], "choices[0].message")
            return content or ""  # null content (a refusal or tool call) is an empty reply, not an error

        return self._map(one, chats)

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Return log P(continuation | chat) for continuations that are a single token, e.g. "Yes" or "No".

        Limitation: OpenAI-compatible servers expose only next-token log-probabilities, and at most the top 20
        of them. So each continuation must be one token in the server's tokenizer; one that is not among the
        top 20 candidates of the first reply position (which includes every multi-token continuation) scores
        -inf. Tokens are compared with surrounding whitespace stripped. Each distinct chat costs one request
        per call, however many continuations are scored against it.
        """
        if len(chats) != len(continuations):
            raise ValueError(f"logprobs got {len(chats)} chats but {len(continuations)} continuations")
        if any(not c.strip() for c in continuations):
            raise ValueError("logprobs continuations must be non-empty tokens such as 'Yes' or 'No'")
        keys = [json.dumps(chat, sort_keys=True) for chat in chats]
        unique = dict(zip(keys, chats, strict=True))
        tops = dict(zip(unique, self._map(self._top_logprobs, list(unique.values())), strict=True))
        return [match_logprob(tops[k], c) for k, c in zip(keys, continuations, strict=True)]

    def _top_logprobs(self, chat: Chat) -> list[dict[str, Any]]:
        body = {
            "model": self.model,
            "messages": list(chat),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        response = self.chat_completion(body)
        path = "choices[0].logprobs.content[0].top_logprobs (does the server support logprobs?)"
        top = self._field(response, lambda r: r["choices"][0]["logprobs"]["content"][0]["top_logprobs"], path)
        return self._field(top, lambda t: [{"token": str(e["token"]), "logprob": float(e["logprob"])} for e in t], path)

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `{base_url}/chat/completions` with retries; return the decoded JSON response."""
        url = f"{self.base_url}/chat/completions"
        data = json.dumps(body).encode()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._post_once(url, data)
            except _Attempt as failure:
                if not failure.retryable or attempt > self.max_retries:
                    tries = f"attempt {attempt} of {self.max_retries + 1}"
                    message = self._redact(f"POST {url} {failure.reason} ({tries})")
                    raise OpenAIError(message, failure.status, url) from None
                wait = failure.retry_after
                time.sleep(self.backoff * 2 ** (attempt - 1) if wait is None else wait)

    def _post_once(self, url: str, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:  # local servers need no key; a hosted API answers 401 without one, which names the problem
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            retryable = exc.code == 429 or exc.code >= 500
            reason = f"failed with HTTP {exc.code}: {server_message(exc.read())}"
            raise _Attempt(reason, exc.code, retryable, retry_after_seconds(exc.headers)) from None
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
            raise self._connection_failure(exc) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Attempt(f"returned a body that is not JSON: {raw[:200]!r}", 200, False) from None

    def _connection_failure(self, exc: BaseException) -> _Attempt:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return _Attempt(f"timed out after {self.timeout:g} s without a response", None, True)
        return _Attempt(f"could not reach the server: {type(reason).__name__}: {reason}", None, True)

    def _field(self, value: Any, get: Callable[[Any], T], path: str) -> T:
        try:
            return get(value)
        except (KeyError, IndexError, TypeError, ValueError):
            shown = self._redact(json.dumps(value)[:300])
            raise OpenAIError(
                f"unexpected response from {self.base_url}/chat/completions: no {path} in {shown}"
            ) from None

    def _redact(self, text: str) -> str:
        # Some servers echo the key back in their error message ("Incorrect API key provided: sk-...").
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))
