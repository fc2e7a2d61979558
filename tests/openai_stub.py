"""A stand-in for an OpenAI-compatible chat-completions server (vLLM, SGLang, NIM) on loopback, for tests.

It speaks the protocol's subset the client uses (POST /v1/chat/completions -> choices[0].message.content + usage),
and can be told to misbehave: fail the first attempts of every prompt with a status (+ Retry-After), be slower than
the client's timeout on a first attempt, or hang after N successful answers (to stage a crash mid-run).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(
        self,
        *,
        fail_first: int = 0,
        fail_code: int = 503,
        retry_after: str | None = None,
        slow_first_s: float = 0.0,
        delay_s: float = 0.0,
        hang_after: int | None = None,
        reject: str | None = None,
        completion_tokens: int = 20,
        model: str = "stub-model",
    ):
        self.fail_first, self.fail_code, self.retry_after = fail_first, fail_code, retry_after
        self.slow_first_s, self.delay_s, self.hang_after, self.reject = slow_first_s, delay_s, hang_after, reject
        self.completion_tokens, self.model = completion_tokens, model
        self.log: list[tuple[str, int]] = []  # (prompt, status) per request, in arrival order
        self.attempts: dict[str, int] = {}
        self.successes = 0
        self.in_flight = self.max_in_flight = 0
        self.usage_sent = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def prompts(self, status: int | None = None) -> list[str]:
        with self.lock:
            return [p for p, s in self.log if status is None or s == status]

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                body = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client is gone (timed out, or killed)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions" or "model" not in req or not req.get("messages"):
                    return self._send(404, {"error": {"message": "not found"}})
                prompt = req["messages"][-1]["content"]
                with stub.lock:
                    stub.attempts[prompt] = attempt = stub.attempts.get(prompt, 0) + 1
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, payload, hdr = self._answer(prompt, attempt)
                finally:
                    with stub.lock:  # before the answer is written: the client may send its next call right away
                        stub.in_flight -= 1
                self._send(status, payload, hdr)

            def _answer(self, prompt: str, attempt: int) -> tuple[int, dict, dict]:
                if stub.reject and stub.reject in prompt:
                    status = 400
                elif attempt <= stub.fail_first:
                    status = stub.fail_code
                else:
                    status = 200
                if status == 200 and attempt == 1 and stub.slow_first_s:
                    time.sleep(stub.slow_first_s)
                time.sleep(stub.delay_s)
                if status == 200 and stub.hang_after is not None:
                    with stub.lock:
                        hang = stub.successes >= stub.hang_after
                    if hang:
                        stub.release.wait()
                with stub.lock:
                    stub.log.append((prompt, status))
                    stub.successes += status == 200
                if status != 200:
                    hdr = {"Retry-After": stub.retry_after} if stub.retry_after is not None else {}
                    return status, {"error": {"message": f"stub status {status}"}}, hdr
                usage = {"prompt_tokens": len(prompt.encode()) // 4 + 10, "completion_tokens": stub.completion_tokens}
                with stub.lock:
                    stub.usage_sent += sum(usage.values())
                return (
                    200,
                    {
                        "id": f"chatcmpl-{attempt}",
                        "object": "chat.completion",
                        "model": stub.model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"REWRITTEN<{prompt}>"},
                            }
                        ],
                        "usage": {**usage, "total_tokens": sum(usage.values())},
                    },
                    {},
                )

        return Handler
