"""OpenAIBackend and `harness serve` over real HTTP on loopback.

The model server is a real `python -m harness.serve hf:tiny-random` subprocess; retry, timeout and key handling
are checked against small scripted HTTP servers on real sockets. Nothing is mocked or patched.
"""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.backends.openai import OpenAIBackend, OpenAIError
from harness.serve import local_server
from harness.types import GenerationParams, user_chat

SPEC = "hf:tiny-random"
CHATS = [
    user_chat("Is the sky blue?"),
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
    user_chat("Write one word."),
]
KEY = "sk-test-secret-4242"


def post(base_url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def server_url():
    with local_server(SPEC) as url:
        yield url


@pytest.fixture(scope="module")
def remote(server_url):
    return OpenAIBackend(SPEC, base_url=server_url, max_retries=0, timeout=60)


# --- the real model server ------------------------------------------------------------------------------------


def test_greedy_generation_matches_in_process_backend(remote, tiny_backend):
    params = GenerationParams(max_new_tokens=6)
    assert remote.generate(CHATS, params) == tiny_backend.generate(CHATS, params)


def test_seeded_sampling_matches_in_process_backend_and_repeats(remote, tiny_backend):
    params = GenerationParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=11)
    first = remote.generate(CHATS, params)
    assert first == tiny_backend.generate(CHATS, params)
    assert remote.generate(CHATS, params) == first
    assert remote.generate(CHATS, GenerationParams(max_new_tokens=6, temperature=1.0, seed=12)) != first


def test_n_choices_are_distinct_samples_and_reproducible(server_url, remote):
    body = {"model": SPEC, "messages": CHATS[0], "n": 3, "temperature": 1.0, "seed": 5, "max_tokens": 6}
    status, response = post(server_url, body)
    assert status == 200
    assert response["object"] == "chat.completion" and response["model"] == SPEC
    texts = [c["message"]["content"] for c in response["choices"]]
    assert [c["index"] for c in response["choices"]] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert {c["message"]["role"] for c in response["choices"]} == {"assistant"}
    usage = response["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > usage["prompt_tokens"] > 10
    assert [c["message"]["content"] for c in post(server_url, body)[1]["choices"]] == texts
    # Choice i is sampled with seed + i, so choice 0 is what a single request with the same seed returns.
    assert remote.generate([CHATS[0]], GenerationParams(max_new_tokens=6, temperature=1.0, seed=5)) == texts[:1]


def single_token_candidates(server_url, chat, tokenizer) -> list[str]:
    """Top-20 tokens of the first reply position that are unambiguous, whitespace-free and one token alone."""
    body = {"model": SPEC, "messages": chat, "max_tokens": 1, "logprobs": True, "top_logprobs": 20}
    top = post(server_url, body)[1]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert len(top) == 20
    stripped = [e["token"].strip() for e in top]
    return [
        e["token"]
        for e in top
        if e["token"] == e["token"].strip() != ""
        and stripped.count(e["token"]) == 1
        and len(tokenizer(e["token"], add_special_tokens=False)["input_ids"]) == 1
    ]


def test_single_token_logprobs_match_in_process_backend(server_url, remote, tiny_backend):
    chats, conts = [], []
    for chat in CHATS:
        tokens = single_token_candidates(server_url, chat, tiny_backend.tokenizer)[:3]
        assert tokens, "the random model's top 20 should hold some plain single-token words"
        chats += [chat] * len(tokens)
        conts += tokens
    expected = tiny_backend.logprobs(chats, conts)
    assert remote.logprobs(chats, conts) == pytest.approx(expected, abs=1e-4)
    assert all(-30 < v < 0 for v in expected)
    # A multi-token continuation can never be among the next-token candidates.
    assert remote.logprobs(CHATS[:1], ["extraordinarily unlikely words"]) == [-math.inf]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": SPEC, "messages": [CHATS[0][0], {"role": "robot", "content": "b"}]}, "messages[1].role"),
        ({"model": SPEC, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": SPEC, "messages": []}, "messages"),
        ({"model": SPEC, "messages": CHATS[0], "max_tokens": 0}, "max_tokens"),
        ({"model": SPEC, "messages": CHATS[0], "max_completion_tokens": "many"}, "max_completion_tokens"),
        ({"model": SPEC, "messages": CHATS[0], "temperature": 9}, "temperature"),
        ({"model": SPEC, "messages": CHATS[0], "top_p": 0}, "top_p"),
        ({"model": SPEC, "messages": CHATS[0], "n": 0}, "n"),
        ({"model": SPEC, "messages": CHATS[0], "stop": ["a", 1]}, "stop"),
        ({"model": SPEC, "messages": CHATS[0], "top_logprobs": 5}, "top_logprobs"),
        ({"model": SPEC, "messages": CHATS[0], "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": SPEC, "messages": CHATS[0], "tools": []}, "tools"),
        ({"model": SPEC, "messages": CHATS[0], "stream": True}, "stream"),
        ({"messages": CHATS[0]}, "model"),
    ],
)
def test_malformed_request_is_a_400_naming_the_field(server_url, body, field):
    status, response = post(server_url, body)
    assert status == 400
    assert response["error"]["param"] == field
    assert response["error"]["type"] == "invalid_request_error"
    assert response["error"]["message"].startswith(field)


def test_unknown_model_and_bad_json_and_bad_path_are_clear(server_url):
    status, response = post(server_url, {"model": "gpt-4o", "messages": CHATS[0]})
    assert status == 404 and "'gpt-4o' is not served here" in response["error"]["message"]
    status, response = post(server_url, b"{not json")
    assert status == 400 and "not valid JSON" in response["error"]["message"]
    status, response = post(server_url.removesuffix("/v1"), {"model": SPEC, "messages": CHATS[0]})
    assert status == 404 and "no such endpoint" in response["error"]["message"]


def test_backend_error_carries_status_path_and_server_message(remote):
    with pytest.raises(OpenAIError, match=r"/v1/chat/completions failed with HTTP 400: messages\[0\]\.role") as info:
        remote.generate([[{"role": "robot", "content": "x"}]], GenerationParams())
    assert info.value.status == 400


def test_models_and_health_endpoints(server_url):
    with urllib.request.urlopen(f"{server_url}/models", timeout=10) as response:
        assert [m["id"] for m in json.load(response)["data"]] == [SPEC]
    with urllib.request.urlopen(server_url.removesuffix("/v1") + "/health", timeout=10) as response:
        assert json.load(response) == {"status": "ok"}


def test_serving_an_openai_backend_proxies_and_local_server_stops(server_url, remote, monkeypatch):
    # A server over `openai:` loads no model, so starting a second one is cheap; the child inherits the env.
    monkeypatch.setenv("OPENAI_BASE_URL", server_url)
    params = GenerationParams(max_new_tokens=5, temperature=1.0, seed=3)
    with local_server(f"openai:{SPEC}", timeout=60) as proxy_url:
        proxy = OpenAIBackend(SPEC, base_url=proxy_url, max_retries=0)
        assert proxy.generate(CHATS, params) == remote.generate(CHATS, params)
        status, response = post(proxy_url, {"model": SPEC, "messages": CHATS[0], "logprobs": True})
        assert status == 400 and response["error"]["param"] == "logprobs"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{proxy_url}/models", timeout=5)


def test_ready_line_and_clean_exit_on_sigterm():
    command = [sys.executable, "-m", "harness.serve", "openai:any-model", "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(r"harness serve: listening on http://127\.0\.0\.1:\d+\n", line), line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "shutting down" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_local_server_reports_a_failed_start():
    with pytest.raises(RuntimeError, match=r"exited with code 2(.|\n)*unknown backend kind 'nope'"):
        with local_server("nope:model", timeout=60):
            pass


# --- scripted servers: retries, timeouts, keys -------------------------------------------------------------------

Reply = tuple[int, dict[str, str], Any]
OK: Reply = (200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}]})


def error_reply(status: int, message: str, **headers: str) -> Reply:
    return status, headers, {"error": {"message": message, "type": "test"}}


class ScriptedServer:
    """A real loopback HTTP server that answers POSTs from a script and records every request it receives."""

    def __init__(self, replies: list[Reply | Callable[[dict[str, str]], Reply]], delay: float = 0.0) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if outer.released.wait(delay):
                    return  # the test is over; drop the connection
                reply = outer.replies[min(len(outer.requests), len(outer.replies)) - 1]
                status, headers, payload = reply(dict(self.headers)) if callable(reply) else reply
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(*replies: Reply | Callable[[dict[str, str]], Reply], delay: float = 0.0) -> ScriptedServer:
        servers.append(ScriptedServer(list(replies), delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_429_and_503_are_retried_with_backoff(scripted):
    server = scripted(error_reply(429, "slow down", **{"Retry-After": "0"}), error_reply(503, "overloaded"), OK)
    backend = OpenAIBackend("m", base_url=server.url, max_retries=5, backoff=0.1)
    start = time.monotonic()
    assert backend.generate([CHATS[0]], GenerationParams()) == ["fine"]
    assert len(server.requests) == 3
    assert time.monotonic() - start >= 0.2  # the 503 had no Retry-After: waited backoff * 2 after the 2nd try


def test_retry_after_overrides_backoff(scripted):
    server = scripted(error_reply(429, "slow down", **{"Retry-After": "0"}), OK)
    backend = OpenAIBackend("m", base_url=server.url, max_retries=1, backoff=60)
    start = time.monotonic()
    assert backend.generate([CHATS[0]], GenerationParams()) == ["fine"]
    assert time.monotonic() - start < 10


def test_retries_are_bounded_and_the_error_says_so(scripted):
    server = scripted(error_reply(500, "kaput"))
    backend = OpenAIBackend("m", base_url=server.url, max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIError, match=r"HTTP 500: kaput \(attempt 3 of 3\)"):
        backend.generate([CHATS[0]], GenerationParams())
    assert len(server.requests) == 3


def test_401_is_not_retried_and_the_echoed_key_is_redacted(scripted, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", KEY)
    # Like api.openai.com, this server quotes the key it was given in its error message.
    server = scripted(lambda headers: error_reply(401, f"Incorrect API key provided: {headers['Authorization']}"))
    backend = OpenAIBackend("m", base_url=server.url, api_key_env="HARNESS_TEST_KEY", max_retries=5, backoff=0.01)
    with pytest.raises(OpenAIError) as info:
        backend.generate([CHATS[0]], GenerationParams())
    message = str(info.value)
    assert len(server.requests) == 1 and info.value.status == 401
    assert f"POST {server.url}/chat/completions failed with HTTP 401: Incorrect API key provided" in message
    assert KEY not in message and KEY not in repr(info.value) and "Bearer ***" in message


def test_key_and_params_reach_the_server_and_the_key_nowhere_else(scripted, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", KEY)
    server = scripted(OK)
    backend = OpenAIBackend("m", base_url=server.url + "/", api_key_env="HARNESS_TEST_KEY")
    params = GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.8, seed=9, stop=("\n",))
    assert backend.generate([CHATS[1]], params) == ["fine"]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    expected = {"model": "m", "messages": CHATS[1], "max_tokens": 7, "temperature": 0.5, "top_p": 0.8}
    assert request["body"] == expected | {"seed": 9, "stop": ["\n"]}
    assert backend.model_id == f"openai:{server.url}:m"
    assert KEY not in backend.model_id + repr(backend) + repr(vars(backend))


def test_a_silent_server_gives_a_clear_timeout(scripted):
    server = scripted(OK, delay=30)
    backend = OpenAIBackend("m", base_url=server.url, timeout=0.3, max_retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(OpenAIError, match=r"timed out after 0\.3 s without a response \(attempt 2 of 2\)"):
        backend.generate([CHATS[0]], GenerationParams())
    assert time.monotonic() - start < 5
    assert len(server.requests) == 2


def test_a_refused_connection_is_retried_then_clear():
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIError, match=r"could not reach the server: ConnectionRefusedError.*attempt 3 of 3"):
        backend.generate([CHATS[0]], GenerationParams())


def test_logprobs_make_one_request_per_distinct_chat(scripted):
    top = [{"token": " Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}, {"token": "Yes", "logprob": -4.0}]
    content = [{"token": " Yes", "logprob": -0.1, "top_logprobs": top}]
    server = scripted((200, {}, {"choices": [{"message": {"content": " Yes"}, "logprobs": {"content": content}}]}))
    backend = OpenAIBackend("m", base_url=server.url)
    chats = [CHATS[0], CHATS[0], CHATS[1], CHATS[1]]
    # "Yes" matches its exact token first; " No" matches "No" once whitespace is stripped.
    assert backend.logprobs(chats, ["Yes", " No", "yes", "Maybe"]) == [-4.0, -2.5, -math.inf, -math.inf]
    assert len(server.requests) == 2
    assert {r["body"]["max_tokens"] for r in server.requests} == {1}
    assert {r["body"]["top_logprobs"] for r in server.requests} == {20}


def test_a_server_without_logprobs_is_a_clear_error(scripted):
    server = scripted(OK)
    with pytest.raises(OpenAIError, match="does the server support logprobs"):
        OpenAIBackend("m", base_url=server.url).logprobs([CHATS[0]], ["Yes"])


def test_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert OpenAIBackend("m").model_id == "openai:http://127.0.0.1:9/v1:m"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAIBackend("m").base_url == "https://api.openai.com/v1"
