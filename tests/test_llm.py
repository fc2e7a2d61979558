"""resources/llm.py: the OpenAI-compatible client against a real HTTP server on loopback (tests/openai_stub.py, a
stand-in)."""

import json
import subprocess
import sys
import time
from pathlib import Path

from curation_assets.core.prompts import Request, cache_key
from resources.llm import Budget, ChatClient, ResultCache, prompt_bound
from resources.store import ObjectStore
from tests.openai_stub import StubServer

ROOT = Path(__file__).resolve().parents[1]


def requests(n: int, prefix: str = "paragraph", max_tokens: int = 64) -> list[Request]:
    out = []
    for i in range(n):
        text = f"{prefix} number {i:03d}: the quick brown fox jumps over the lazy dog."
        out.append(
            Request(
                cache_key(text, "wrap.easy.v1", "tmpl", "stub-model", {"max_tokens": max_tokens}),
                [{"role": "user", "content": text}],
                max_tokens,
            )
        )
    return out


def client(server: StubServer, **kw) -> ChatClient:
    kw = {"concurrency": 4, "max_retries": 3, "backoff_s": 0.01, "timeout_s": 5.0, **kw}
    return ChatClient(server.base_url, "stub-model", **kw)


def test_bounded_concurrency_and_every_result_lands_on_its_request():
    with StubServer(delay_s=0.05) as server:
        c = client(server, concurrency=4)
        reqs = requests(24)
        out = c.run(reqs)
    assert 2 <= server.max_in_flight <= 4  # parallel, never more than `concurrency` in flight
    assert all(out[r.key]["text"] == f"REWRITTEN<{r.messages[-1]['content']}>" for r in reqs)
    assert c.stats.calls == c.stats.completed == 24 and c.stats.retries == 0


def test_retries_with_backoff_then_succeed_and_client_errors_are_not_retried():
    with StubServer(fail_first=2, fail_code=503, retry_after="0") as server:
        c = client(server)
        reqs = requests(5)
        out = c.run(reqs)
        assert all(out[r.key] is not None for r in reqs)
        assert c.stats.retries == 10 and c.stats.calls == 15  # two 503s per prompt, then 200
    with StubServer(fail_first=10, fail_code=429) as server:
        c = client(server, max_retries=2)
        out = c.run(requests(2))
        assert list(out.values()) == [None, None] and c.stats.calls == 6 and c.stats.failed == 2
    with StubServer(reject="number 001") as server:
        c = client(server)
        out = c.run(requests(3))
        assert [v is None for v in out.values()] == [False, True, False]
        assert server.prompts(400) == [requests(3)[1].messages[-1]["content"]]  # a 400 is asked once


def test_a_call_slower_than_the_timeout_is_retried():
    with StubServer(slow_first_s=1.5) as server:
        c = client(server, timeout_s=0.4, concurrency=2)
        out = c.run(requests(2))
    assert all(v is not None for v in out.values()) and c.stats.retries == 2


def test_budget_stops_before_it_is_exceeded():
    reqs = requests(30, max_tokens=64)
    worst = prompt_bound(reqs[0].messages) + 64
    budget = Budget(max_tokens=int(worst * 6.5), max_usd=None)
    with StubServer() as server:
        c = client(server, concurrency=3, budget=budget)
        out = c.run(reqs)
    sent = sum(v is not None for v in out.values())
    assert 6 <= sent < 30 and c.stats.budget_skipped == 30 - sent
    assert len(server.prompts()) == sent  # nothing sent past the stop
    assert budget.spent_tokens == server.usage_sent <= budget.max_tokens  # settled to the reported usage
    assert budget.reserved_tokens == 0
    # dollars: the same guarantee
    usd = Budget(max_usd=0.2, usd_per_mtok_prompt=100, usd_per_mtok_completion=400)
    with StubServer() as server:
        c = client(server, concurrency=1, budget=usd)
        out = c.run(requests(30))
    assert 0 < sum(v is not None for v in out.values()) < 30 and usd.spent_usd <= 0.2


def test_cache_answers_a_rerun_without_calls(tmp_path):
    cache = ResultCache(str(tmp_path / "cache"), ObjectStore())
    reqs = requests(6)
    with StubServer() as server:
        first = client(server, cache=cache).run(reqs)
        again = client(server, cache=cache)
        second = again.run(reqs + requests(2, prefix="new"))
        assert len(server.prompts()) == 8  # 6, then only the 2 new ones
    assert again.stats.cache_hits == 6 and all(second[r.key] == first[r.key] for r in reqs)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 8


CRASHING_RUN = """
import sys
from resources.llm import ChatClient, ResultCache
from resources.store import ObjectStore
from tests.test_llm import requests
c = ChatClient(sys.argv[1], "stub-model", concurrency=2, backoff_s=0.01, timeout_s=60,
               cache=ResultCache(sys.argv[2], ObjectStore()))
c.run(requests(12))
"""


def test_rerun_after_a_crash_resumes_from_the_cache_without_duplicate_calls(tmp_path):
    cache_dir = tmp_path / "cache"
    with StubServer(hang_after=5) as server:
        proc = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, server.base_url, str(cache_dir)], cwd=ROOT)
        deadline = time.time() + 60
        while len(list(cache_dir.rglob("*.json"))) < 5 and time.time() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL mid-run: 5 results cached, 2 calls hanging in flight
        proc.wait()
        cached = {json.loads(p.read_text())["text"] for p in cache_dir.rglob("*.json")}
        assert len(cached) == 5
        server.release.set()
        server.hang_after = None
        time.sleep(0.2)
        before = len(server.log)
        c = client(server, cache=ResultCache(str(cache_dir), ObjectStore()))
        out = c.run(requests(12))
        rerun = [p for p, _ in server.log[before:]]
    assert all(v is not None for v in out.values())
    assert c.stats.cache_hits == 5 and len(rerun) == 7 == len(set(rerun))  # only what was never answered
    assert not {f"REWRITTEN<{p}>" for p in rerun} & cached  # no cached result is asked for again
