"""A client for any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, NIM): bounded concurrency, retries
with backoff, timeouts, a token/$ budget that stops before it is exceeded, and a content-addressed result cache.

Standard library only (urllib + threads). No Dagster here: the resource in `resources/synthetic.py` configures it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from curation_assets.core.prompts import Request

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class ResultCache:
    """One JSON object per result under `root` (`<root>/<k[:2]>/<k>.json`), written atomically as soon as it arrives,
    never deleted by the pipeline: a crashed run loses at most the calls in flight."""

    def __init__(self, root: str, store):
        self.root, self.store = root.rstrip("/"), store

    def _uri(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict | None:
        uri = self._uri(key)
        return json.loads(self.store.read_bytes(uri)) if self.store.exists(uri) else None

    def put(self, key: str, value: dict) -> None:
        self.store.write_bytes(self._uri(key), json.dumps(value, ensure_ascii=False).encode())


@dataclass
class Budget:
    """Caps on tokens (prompt + completion) and dollars. A call reserves its worst case before it is sent - prompt
    tokens bounded by the prompt's UTF-8 bytes (a byte-level BPE token is at least one byte) plus a per-message
    allowance, completion by `max_tokens` - and settles to the usage the server reports. A call whose worst case
    does not fit is not sent, so the spend can never pass the cap, even with calls in flight."""

    max_tokens: int | None = None
    max_usd: float | None = None
    usd_per_mtok_prompt: float = 0.0
    usd_per_mtok_completion: float = 0.0
    spent_tokens: int = 0
    spent_usd: float = 0.0
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def usd(self, prompt: int, completion: int) -> float:
        return (prompt * self.usd_per_mtok_prompt + completion * self.usd_per_mtok_completion) / 1e6

    def reserve(self, prompt: int, completion: int) -> bool:
        tokens, usd = prompt + completion, self.usd(prompt, completion)
        with self._lock:
            if self.max_tokens is not None and self.spent_tokens + self.reserved_tokens + tokens > self.max_tokens:
                return False
            if self.max_usd is not None and self.spent_usd + self.reserved_usd + usd > self.max_usd + 1e-12:
                return False
            self.reserved_tokens += tokens
            self.reserved_usd += usd
            return True

    def settle(self, reserved: tuple[int, int], used: tuple[int, int] | None) -> None:
        """Release a reservation; charge what the server reported (the whole reservation when it reported nothing)."""
        used = reserved if used is None else used
        with self._lock:
            self.reserved_tokens -= sum(reserved)
            self.reserved_usd -= self.usd(*reserved)
            self.spent_tokens += sum(used)
            self.spent_usd += self.usd(*used)


def prompt_bound(messages: list[dict]) -> int:
    return sum(len(m["content"].encode()) + 8 for m in messages) + 16


@dataclass
class Stats:
    requested: int = 0
    cache_hits: int = 0
    calls: int = 0  # HTTP attempts, retries included
    retries: int = 0
    completed: int = 0
    failed: int = 0
    budget_skipped: int = 0


class ChatClient:
    """Runs `Request`s against `<base_url>/chat/completions`; results are `{"text", "usage", ...}` or None."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
        params: dict | None = None,
        budget: Budget | None = None,
        cache: ResultCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.concurrency = model, api_key, max(1, concurrency)
        self.max_retries, self.backoff_s, self.max_backoff_s, self.timeout_s = (
            max_retries,
            backoff_s,
            max_backoff_s,
            timeout_s,
        )
        self.params, self.budget, self.cache, self.sleep = dict(params or {}), budget or Budget(), cache, sleep
        self.stats = Stats()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _post(self, req: Request) -> tuple[dict | None, tuple[int, int] | None, str]:
        body = json.dumps(
            {"model": self.model, "messages": req.messages, "max_tokens": req.max_tokens, **self.params}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.stats.calls += 1
                self.stats.retries += attempt > 0
            wait = None
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(self.url, body, headers), timeout=self.timeout_s
                ) as r:
                    out = json.loads(r.read())
                usage = out.get("usage") or {}
                used = (
                    (int(usage["prompt_tokens"]), int(usage["completion_tokens"])) if "prompt_tokens" in usage else None
                )
                return out, used, "ok"
            except urllib.error.HTTPError as e:
                if e.code not in RETRYABLE:
                    return None, (0, 0), f"http_{e.code}"
                ra = e.headers.get("Retry-After") if e.headers else None
                wait = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, KeyError, ValueError):
                pass  # timeouts, resets, a truncated body: retried
            if attempt < self.max_retries:
                backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                self.sleep(min(self.max_backoff_s, wait) if wait is not None else backoff)
        return None, None, "retries_exhausted"

    def _one(self, req: Request) -> dict | None:
        reserved = (prompt_bound(req.messages), req.max_tokens)
        if self._stop.is_set() or not self.budget.reserve(*reserved):
            self._stop.set()  # the budget is spent: send nothing more
            with self._lock:
                self.stats.budget_skipped += 1
            return None
        out, used, status = self._post(req)
        self.budget.settle(reserved, used)  # None (no usage reported, or timed out): charged in full
        try:
            text = out["choices"][0]["message"]["content"] if out else None
        except (KeyError, IndexError, TypeError):
            text = None
        with self._lock:
            self.stats.completed += text is not None
            self.stats.failed += text is None
        if text is None:
            return None
        result = {
            "text": text,
            "usage": list(used) if used else None,
            "model": out.get("model", self.model),
            "finish_reason": out["choices"][0].get("finish_reason"),
        }
        if self.cache is not None:
            self.cache.put(req.key, result)  # persisted before anything else can fail
        return result

    def run(self, requests: Iterable[Request]) -> dict[str, dict | None]:
        """key -> result (None = failed or not sent: budget). Cached keys are answered without a call."""
        requests = list(requests)
        results: dict[str, dict | None] = {}
        todo = []
        for req in requests:
            self.stats.requested += 1
            hit = self.cache.get(req.key) if self.cache is not None else None
            if hit is not None:
                self.stats.cache_hits += 1
                results[req.key] = hit
            elif req.key not in results:
                results[req.key] = None
                todo.append(req)
        with ThreadPoolExecutor(self.concurrency) as ex:  # at most `concurrency` requests in flight
            for req, res in zip(todo, ex.map(self._one, todo)):
                results[req.key] = res
        return results
