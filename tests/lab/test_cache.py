"""`mcpdeploy ops cache` against the lab, seen through the edge (https://127.0.0.1:8443).

The observable: a post is retitled directly in PostgreSQL on the data host, which the
service cannot know about. While an answer is cached, `get_post` keeps the old title although
the database has the new one; a flush, caching off or the TTL's end brings the new title.

The module restores the cache settings it found, flushes, and deletes its post, its author
and its API key, whatever happens.
"""

from __future__ import annotations

import json
import shlex
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from release_harness import SWITCH_SECONDS, lab_status, tool_call_on

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATABASE = "railspress_production"
# Long enough that only a flush, caching off or a new TTL can end a cached answer here.
LONG_TTL = 600


def ops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mcpdeploy"), "ops", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def cache(*args: str) -> tuple[dict, float]:
    """``ops cache ARGS --json``: the state it reports, and when it returned (monotonic)."""
    result = ops("cache", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), time.monotonic()


def settled(returned: float) -> None:
    """Wait out the promise (every worker of every host follows within 5 s of the command;
    the lab's app.settingsCacheSeconds makes it SWITCH_SECONDS):
    what is asserted after it must hold on every worker."""
    time.sleep(max(0.0, returned + SWITCH_SECONDS - time.monotonic()))


@pytest.fixture(scope="module")
def lab() -> dict:
    return lab_status()


def on_host(lab: dict, host: str, command: str, stdin: str = "") -> str:
    result = subprocess.run(
        ["ssh", "-F", lab["ssh_config"], host, command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def sql(lab: dict, statements: str) -> str:
    """Run SQL as postgres on the data host (on stdin: no quoting of values in a shell)."""
    return on_host(
        lab,
        "data",
        f"cd / && runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {DATABASE}",
        statements,
    )


@pytest.fixture(scope="module")
def post(lab) -> Iterator[str]:
    """A published post, and its author, of this module's own; deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    slug, user = f"cache-probe-{tag}", f"cache-probe-{tag}"
    sql(
        lab,
        f"INSERT INTO public.users (username, email, name)"
        f" VALUES ('{user}', '{user}@example.com', 'Cache probe');"
        f"INSERT INTO public.posts (author_id, slug, title, status, published_at)"
        f" SELECT id, '{slug}', 'first', 'published', now() FROM public.users"
        f" WHERE username = '{user}';",
    )
    yield slug
    sql(
        lab,
        f"DELETE FROM public.posts WHERE slug = '{slug}';"
        f"DELETE FROM public.users WHERE username = '{user}';",
    )


def retitle(lab: dict, slug: str, title: str) -> None:
    updated = sql(
        lab, f"UPDATE public.posts SET title = '{title}' WHERE slug = '{slug}' RETURNING slug;"
    )
    assert updated.split() == [slug, "UPDATE", "1"] or updated.split() == [slug], updated


@pytest.fixture(scope="module")
def key(lab) -> Iterator[str]:
    """A key of this module's own, revoked afterwards: the lab's key is shared with load
    tests, whose budget may be spent (429)."""
    made = on_host(
        lab, "app-blue", "docker exec mcp-service mcp-service keys create --name lab-cache-test"
    )
    created = json.loads(made.strip().splitlines()[-1])
    yield created["key"]
    on_host(
        lab,
        "app-blue",
        f"docker exec mcp-service mcp-service keys revoke {shlex.quote(created['prefix'])}",
    )


@pytest.fixture(scope="module")
def title(lab, key, post) -> Iterator[Callable[[], str]]:
    """The title ``get_post`` answers for the module's post, through the edge."""
    trust = ssl.create_default_context(cafile=lab["ca_cert"])
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_post", "arguments": {"slug": post}},
    }
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}

    with httpx2.Client(base_url=lab["url"], verify=trust, timeout=15) as http:

        def served() -> str:
            # The per-client budget (100 a minute) is shared with every client on this
            # machine: a 429 waits for the next window, never counts as an answer.
            for _ in range(14):
                response = http.post("/api/v1/mcp/", json=body, headers=headers)
                if response.status_code != 429:
                    break
                time.sleep(5)
            assert response.status_code == 200, response.text[:300]
            result = response.json()["result"]
            assert not result.get("isError"), result
            return json.loads(result["content"][0]["text"])["title"]

        yield served


@pytest.fixture(scope="module", autouse=True)
def settings_restored() -> Iterator[dict]:
    """The cache settings as found, put back (and the cache flushed) whatever happens."""
    found, _ = cache()
    yield found
    toggle = "--on" if found["enabled"] else "--off"
    restored, _ = cache(toggle, "--ttl", str(found["ttl"]), "--flush")
    assert (restored["enabled"], restored["ttl"]) == (found["enabled"], found["ttl"])


@pytest.fixture
def cached(lab, post, title) -> str:
    """Caching on with a long TTL, settled on every worker, and the post's answer cached
    while the database already says otherwise: the title now served from the cache."""
    state, returned = cache("--on", "--ttl", str(LONG_TTL), "--flush")
    assert (state["enabled"], state["ttl"], state["flushed"]) == (True, LONG_TTL, True)
    settled(returned)
    old = f"cached-{uuid.uuid4().hex[:6]}"
    retitle(lab, post, old)
    assert title() == old
    retitle(lab, post, "changed-in-postgres")
    return old


def poll(probe: Callable[[], str], wanted: str, bound: float, every: float = 0.5) -> float:
    """Seconds until ``probe()`` answers ``wanted``; fails after ``bound`` seconds."""
    started = time.monotonic()
    while (answer := probe()) != wanted:
        assert time.monotonic() - started <= bound, (answer, wanted, bound)
        time.sleep(every)
    return time.monotonic() - started


def test_a_cached_answer_hides_a_database_change_until_a_flush(title, cached):
    # Served from Redis: PostgreSQL has had another title since before these calls.
    assert [title() for _ in range(3)] == [cached] * 3
    state, _ = cache("--flush")
    assert state["flushed"] and state["generation"] > 0
    # The generation is read on every request: the next answer is fresh, on any worker.
    assert title() == "changed-in-postgres"


def test_off_serves_every_database_change_within_5_s_on_both_colors(lab, post, title, cached):
    # The idle color reads the same Redis: it serves the same cached answer.
    on_green = tool_call_on("app-green", "get_post", {"slug": post})
    assert json.loads(on_green["body"]["result"]["content"][0]["text"])["title"] == cached

    state, returned = cache("--off")
    assert (state["enabled"], state["flushed"]) == (False, False)
    assert poll(title, "changed-in-postgres", SWITCH_SECONDS) <= SWITCH_SECONDS
    settled(returned)
    # From now on every worker reads PostgreSQL: each change is served at once.
    for fresh in ("fresh-1", "fresh-2"):
        retitle(lab, post, fresh)
        assert title() == fresh
    on_green = tool_call_on("app-green", "get_post", {"slug": post})
    assert json.loads(on_green["body"]["result"]["content"][0]["text"])["title"] == "fresh-2"
    shown, _ = cache()
    assert (shown["enabled"], shown["ttl"]) == (False, LONG_TTL)


def test_a_new_ttl_bounds_old_entries_within_5_s_and_is_the_new_expiry(lab, post, title, cached):
    ttl = 3
    state, returned = cache("--ttl", str(ttl))
    assert (state["enabled"], state["ttl"], state["flushed"]) == (True, ttl, False)
    # The entry cached for 600 s is not served once the workers have read the new TTL.
    assert poll(title, "changed-in-postgres", SWITCH_SECONDS) <= SWITCH_SECONDS
    settled(returned)

    retitle(lab, post, "stored")
    cache("--flush")
    asked = time.monotonic()
    assert title() == "stored"  # a miss: stored now for `ttl` seconds
    answered = time.monotonic()
    retitle(lab, post, "after-the-ttl")
    assert title() == "stored"
    polling = time.monotonic()
    seen = polling + poll(title, "after-the-ttl", ttl + 2, every=0.25)
    # Expired `ttl` s after it was stored, between `asked` and `answered`: not earlier (then
    # it was not cached for the TTL), not much later (then the TTL was not the new one).
    assert asked + ttl - 0.1 <= seen <= answered + ttl + 1.0, (seen - asked, seen - answered)
