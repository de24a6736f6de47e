"""A small OpenAI-compatible chat-completions server over any harness backend (normally `hf:`).

Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`. Model calls are serialised with a lock,
so concurrent clients queue instead of fighting over the CPU. `local_server` runs one as a subprocess for
callers (and tests) that want a real HTTP endpoint without any network beyond loopback.

Run it with `harness serve hf:smollm2-135m --port 8000` or `python -m harness.serve hf:smollm2-135m --port 8000`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from harness.backends import Backend
from harness.types import Chat, GenerationParams, Message

READY_PREFIX = "harness serve: listening on "
ROLES = ("system", "user", "assistant")
SUPPORTED_FIELDS = frozenset(
    {"model", "messages", "n", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop"}
    | {"logprobs", "top_logprobs"}
)
# Accepted because they cannot change the reply; stream and the penalties only at their no-op values.
NO_EFFECT_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "stream"})
NO_OP_PENALTIES = ("frequency_penalty", "presence_penalty")
# The decode loop allocates max_tokens slots per row up front, so an absurd request must not reach it.
MAX_NEW_TOKENS = 8192
MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_BODY_BYTES = 16 << 20


class RequestError(ValueError):
    """A client error, answered with an OpenAI-style error JSON that names the offending field."""

    def __init__(self, param: str | None, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request; `top_logprobs` is None when no logprobs were asked for."""

    model: str
    chat: Chat
    n: int
    params: GenerationParams
    top_logprobs: int | None


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    """Read an optional numeric field and check its range, naming the field on error."""
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        raise RequestError(name, f"{name} must be {kind} in [{low}, {high}], got {value!r}")
    return value


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    # Many clients send content as a list of parts; text parts carry the same meaning as a plain string.
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        if all(isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
    raise RequestError(where, f"{where} must be a string or a list of text parts, got {value!r:.80}")


def parse_messages(value: Any) -> Chat:
    """Validate `messages` into a Chat, naming the first bad field (e.g. `messages[1].role`)."""
    if not isinstance(value, list) or not value:
        raise RequestError("messages", "messages must be a non-empty list of {role, content} objects")
    chat: Chat = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise RequestError(where, f"{where} must be an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role", f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
        chat.append(Message(role=role, content=_content(item.get("content"), f"{where}.content")))
    return chat


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("stop", f"stop must be a non-empty string or a list of up to 4 of them, got {value!r}")
    return tuple(stops)


def _check_fields(body: dict[str, Any]) -> None:
    for name in body:
        if name not in SUPPORTED_FIELDS | NO_EFFECT_FIELDS | set(NO_OP_PENALTIES):
            raise RequestError(name, f"{name} is not supported by this server")
    if body.get("stream"):
        raise RequestError("stream", "stream=true is not supported by this server")
    for name in NO_OP_PENALTIES:
        if body.get(name) not in (None, 0):
            raise RequestError(name, f"{name} is not supported by this server (only 0)")


def parse_request(body: Any, served: Collection[str]) -> ChatRequest:
    """Validate a chat-completions body; raise RequestError naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(None, "the request body must be a JSON object")
    _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError("model", f"model must be a string, one of {sorted(served)}")
    if model not in served:
        raise RequestError("model", f"model {model!r} is not served here; use one of {sorted(served)}", 404)
    if body.get("top_p") == 0:  # GenerationParams would reject it too, but without naming the request field
        raise RequestError("top_p", "top_p must be a number in (0, 1], got 0")
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    params = GenerationParams(
        max_new_tokens=_number(body, tokens_field, GenerationParams.max_new_tokens, 1, MAX_NEW_TOKENS, True),
        temperature=float(_number(body, "temperature", 0.0, 0, 2)),
        top_p=float(_number(body, "top_p", 1.0, 0, 1)),
        seed=_number(body, "seed", 0, -(2**63), 2**63 - 1, True),
        stop=_stop(body.get("stop")),
    )
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise RequestError("logprobs", f"logprobs must be true or false, got {logprobs!r}")
    if body.get("top_logprobs") is not None and not logprobs:
        raise RequestError("top_logprobs", "top_logprobs needs logprobs=true")
    top = _number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, True) if logprobs else None
    n = _number(body, "n", 1, 1, MAX_N, True)
    return ChatRequest(model, parse_messages(body.get("messages")), n, params, top)


class ChatService:
    """The model side of the server: turns validated requests into OpenAI-shaped responses."""

    def __init__(self, backend: Backend, name: str) -> None:
        self.backend = backend
        self.name = name
        # Clients may name the model by the full spec (`hf:tiny-random`) or by the part after the kind.
        self.served = {name, name.partition(":")[2] or name}
        self.tokenizer = getattr(backend, "tokenizer", None)
        self.lock = threading.Lock()

    def models(self) -> dict[str, Any]:
        """The `GET /v1/models` response."""
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "harness"}]}

    def complete(self, body: Any) -> dict[str, Any]:
        """Answer one `POST /v1/chat/completions` body."""
        request = parse_request(body, self.served)
        # Only an in-process model (hf) exposes the logits; an `openai:` backend's `model` is just a name.
        if request.top_logprobs is not None and (
            self.tokenizer is None or not callable(getattr(self.backend, "model", None))
        ):
            raise RequestError("logprobs", f"logprobs are not available from backend {self.backend.model_id}")
        # The lock also covers tokenizer calls: a fast tokenizer used from two threads at once can fail.
        with self.lock:
            texts = self._generate(request)
            counts = [self._count(t) for t in texts]
            prompt = self._count(self.backend.render(request.chat)) if hasattr(self.backend, "render") else None
            logprobs = self._logprobs(request, texts)
        choices = []
        for i, (text, count, logp) in enumerate(zip(texts, counts, logprobs, strict=True)):
            length = count is not None and count >= request.params.max_new_tokens
            choice = {"index": i, "message": {"role": "assistant", "content": text}}
            choices.append(choice | {"finish_reason": "length" if length else "stop", "logprobs": logp})
        response = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time())}
        response |= {"model": self.name, "system_fingerprint": self.backend.model_id, "choices": choices}
        if prompt is not None and None not in counts:
            completion = sum(c for c in counts if c is not None)
            response["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
            response["usage"]["total_tokens"] = prompt + completion
        return response

    def _generate(self, request: ChatRequest) -> list[str]:
        if request.params.temperature == 0:  # greedy: every choice is the same reply
            return self.backend.generate([request.chat], request.params) * request.n
        # The backends seed each row from (seed, prompt), so n samples of one prompt need n seeds.
        seeds = [replace(request.params, seed=request.params.seed + i) for i in range(request.n)]
        return [self.backend.generate([request.chat], params)[0] for params in seeds]

    def _count(self, text: str) -> int | None:
        # Re-tokenising the decoded reply can differ from the generated ids by a token at merge boundaries.
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _logprobs(self, request: ChatRequest, texts: list[str]) -> list[dict[str, Any] | None]:
        if request.top_logprobs is None:
            return [None] * len(texts)
        logp = self._first_position_logprobs(request.chat)
        return [self._choice_logprobs(logp, text, request.top_logprobs) for text in texts]

    def _first_position_logprobs(self, chat: Chat) -> Any:
        import torch

        model = self.backend.model  # type: ignore[attr-defined]
        text = self.backend.render(chat)  # type: ignore[attr-defined]
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1).cpu()

    def _choice_logprobs(self, logp: Any, text: str, k: int) -> dict[str, Any]:
        """OpenAI's `logprobs` object for the first generated position only (later positions are omitted)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        chosen = ids[0] if ids else self.tokenizer.eos_token_id  # an empty reply means the model stopped at once
        values, indices = logp.topk(k)
        entry = self._token_entry(chosen, float(logp[chosen]))
        entry["top_logprobs"] = [
            self._token_entry(i, v) for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return {"content": [entry]}

    def _token_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        token = self.tokenizer.decode([token_id])
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send(200, self.server.service.models())
        else:
            self._error(RequestError(None, f"no such endpoint: GET {path}", 404))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path != "/v1/chat/completions":
                raise RequestError(None, f"no such endpoint: POST {path}", 404)
            response = self.server.service.complete(self._read_json())
        except RequestError as exc:
            self._error(exc)
        except Exception as exc:  # a bug or a model failure: say so to the client, keep serving
            traceback.print_exc()
            self._send(500, {"error": {"message": f"internal error: {exc}", "type": "server_error", "param": None}})
        else:
            self._send(200, response)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise RequestError(None, f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise RequestError(None, f"request body is not valid JSON: {exc}") from None

    def _error(self, exc: RequestError) -> None:
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        self._send(exc.status, {"error": {"message": str(exc), "type": kind, "param": exc.param, "code": None}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    service: ChatService


def make_http_server(service: ChatService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Bind an HTTP server for `service` (port 0 picks a free port); the caller runs `serve_forever`."""
    server = _Server((host, port), _Handler)
    server.service = service
    return server


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # lets SIGTERM leave serve_forever through the same path as Ctrl-C


def run_server(backend_spec: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load `backend_spec` and serve it until SIGTERM or Ctrl-C; print the ready line once listening."""
    from harness.backends import make_backend

    server = make_http_server(ChatService(make_backend(backend_spec), backend_spec), host, port)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    bound_host, bound_port = server.server_address[:2]
    try:
        # Inside the try: a SIGTERM sent as soon as the ready line is read must still end in a clean exit.
        print(f"{READY_PREFIX}http://{bound_host}:{bound_port}", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("harness serve: shutting down", file=sys.stderr, flush=True)
    finally:
        server.server_close()
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    """Return the server URL from its ready line; raise if it exits or stays silent for `timeout` seconds."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            raise TimeoutError(f"harness serve was not ready after {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"harness serve exited with code {proc.wait()} before it was ready")
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()


def _stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def local_server(backend_spec: str, timeout: float = 120) -> Iterator[str]:
    """Run `python -m harness.serve` on a free loopback port; yield its base URL (`http://127.0.0.1:PORT/v1`).

    The server is terminated when the block exits. If it fails to start, the error carries the end of its stderr.
    """
    command = [sys.executable, "-m", "harness.serve", backend_spec, "--host", "127.0.0.1", "--port", "0"]
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            try:
                url = _wait_ready(proc, timeout)
            except (TimeoutError, RuntimeError) as exc:
                _stop_process(proc)
                log.seek(0)
                raise type(exc)(f"{exc}; its stderr ends with:\n{log.read()[-3000:]}") from None
            yield f"{url}/v1"
        finally:
            _stop_process(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.serve MODEL [--host H] [--port N]`, the same as `harness serve`."""
    from harness.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
