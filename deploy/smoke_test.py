"""The compose stack's smoke test, run by CI (.github/workflows/deploy.yml) against
`docker compose -f compose.yaml -f deploy/compose.smoke.yaml up`:

    python deploy/smoke_test.py http://127.0.0.1:3429     # CHAIN429_API_KEY, CHAIN429_ADMIN_KEY set

From the outside, through the load balancer, with the official `openai` SDK:

1. one chat request through each instance (nginx's `X-Chain429-Instance` says which);
2. the limit is shared: deploy/smoke.yaml's first entry allows one request a
   minute, so the first request is answered by `first` and the second, on the
   other instance, falls through to `second`;
3. the request log is shared: each instance's stats count both requests.

Exits 0 when all hold, 1 with the reason otherwise. Bounded: it gives the stack
90 s to answer /health and the request log 15 s to show the requests.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

import httpx
from openai import OpenAI

INSTANCE_HEADER = "X-Chain429-Instance"
PROVIDER_HEADER = "X-429chain-Provider"


def fail(message: str) -> NoReturn:
    print(f"smoke test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def wait_healthy(base_url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base_url}/health", timeout=3)
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}"
        except httpx.HTTPError as err:
            last = str(err)
        time.sleep(1)
    fail(f"{base_url}/health did not answer 200 within {timeout_s:.0f} s ({last})")


def chat(client: OpenAI) -> tuple[str, str]:
    """One chat request: (instance, provider id) that served it."""
    raw = client.chat.completions.with_raw_response.create(
        model="smoke", messages=[{"role": "user", "content": "smoke test"}]
    )
    reply = raw.parse()
    if not reply.choices or not reply.choices[0].message.content:
        fail(f"an empty answer: {reply}")
    entry = raw.headers.get(PROVIDER_HEADER, "?")  # provider/model
    return raw.headers.get(INSTANCE_HEADER, "?"), entry.split("/", 1)[0]


def logged_everywhere(base_url: str, admin_key: str, instances: set[str], expected: int) -> None:
    """Ask /v1/stats/summary until every instance counts `expected` requests."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{base_url}/v1/stats/summary",
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=5,
        )
        if answer.status_code != 200:
            fail(f"/v1/stats/summary: HTTP {answer.status_code}: {answer.text[:300]}")
        seen[answer.headers.get(INSTANCE_HEADER, "?")] = answer.json()["requests"]
        if all(seen.get(instance, 0) >= expected for instance in instances):
            return
        time.sleep(0.5)
    fail(f"each instance's stats should count {expected} requests, got {seen}")


def main() -> None:
    base_url = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3429").rstrip("/")
    api_key = os.environ.get("CHAIN429_API_KEY") or fail("CHAIN429_API_KEY is not set")
    admin_key = os.environ.get("CHAIN429_ADMIN_KEY") or fail("CHAIN429_ADMIN_KEY is not set")
    wait_healthy(base_url)
    client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=30)

    (one, first), (two, second) = chat(client), chat(client)
    print(f"request 1: instance {one}, answered by {first}")
    print(f"request 2: instance {two}, answered by {second}")
    if one == two or "?" in (one, two):
        fail(f"nginx should send consecutive requests to both instances, got {one} and {two}")
    if (first, second) != ("first", "second"):
        fail(
            "the entry limited to 1 request a minute should answer once across both "
            f"instances, then the chain falls through: got {first}, then {second}"
        )
    logged_everywhere(base_url, admin_key, {one, two}, expected=2)
    print("smoke test passed: both instances serve, share the limit and the request log")


if __name__ == "__main__":
    main()
