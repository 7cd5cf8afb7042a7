"""Who shares the store: `GET /v1/admin/instances` and `chain429 status`, with real processes.

Two `chain429 serve` processes on the real Redis (a namespace of the test's
own, see tests/cli/test_redis_instances.py for the set-up they share) each
list both; a killed one leaves the list within its lease; `status` warns
when their configs differ, and never prints a config value to do so.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
from test_redis_instances import KEY, Instance, two_instances

from chain429.fakes.provider import FakeProvider
from fixtures.processes import free_port, run, serving, wait_healthy, write_config

SECRET_KEY = "a"  # the limited provider's apiKey in write_config


def listing(instance: Instance) -> dict[str, Any]:
    response = httpx.get(
        f"{instance.url}/v1/admin/instances",
        headers={"authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(instance: Instance, count: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = listing(instance)
        if len(body["instances"]) == count:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def status(instance: Instance, *args: str) -> Any:
    return run("status", "--server", instance.url, *args, env={"CHAIN429_ADMIN_KEY": KEY})


def test_each_instance_lists_both_and_a_killed_one_leaves_within_the_lease(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 20") as (a, b, *_):
        body = wait_for(a, 2)
        assert body["store"] == "redis" and body["configs_differ"] is False
        assert [r["pid"] for r in body["instances"]] == [a.proc.pid, b.proc.pid]
        assert body["instances"][0]["id"] == body["this"]
        assert {r["config_generation"] for r in body["instances"]} == {1}
        assert {r["pid"] for r in wait_for(b, 2)["instances"]} == {a.proc.pid, b.proc.pid}

        shown = status(a)
        assert shown.returncode == 0, shown.stderr
        assert str(a.proc.pid) in shown.stdout and str(b.proc.pid) in shown.stdout
        assert "different configs" not in shown.stderr
        as_json = json.loads(status(a, "--json").stdout)
        assert len(as_json["instances"]["instances"]) == 2

        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=10)
        killed_at = time.monotonic()
        body = wait_for(a, 1, timeout=1.5 + 1.5)  # stateLeaseMs: 1500, and a listing's time
        assert [r["pid"] for r in body["instances"]] == [a.proc.pid]
        assert time.monotonic() - killed_at < 3


def test_a_stopped_instance_leaves_at_once(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 20") as (a, b, *_):
        wait_for(a, 2)
        b.stop()  # Ctrl-C: a graceful stop withdraws its record
        assert [r["pid"] for r in listing(a)["instances"]] == [a.proc.pid]


def test_status_warns_when_the_instances_configs_differ(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 20") as (a, b, *_):
        wait_for(a, 2)
        b.config.write_text(
            b.config.read_text().replace("requestsPerMinute: 20", "requestsPerMinute: 30")
        )
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not listing(a)["configs_differ"]:
            assert time.monotonic() < deadline, "a never saw b's new config"
            time.sleep(0.1)
        generations = {r["pid"]: r["config_generation"] for r in listing(a)["instances"]}
        assert generations == {a.proc.pid: 1, b.proc.pid: 2}
        shown = status(a)
        assert shown.returncode == 0, shown.stderr
        assert "different configs" in " ".join(shown.stderr.split())
        digests = {r["config_digest"] for r in listing(a)["instances"]}
        assert len(digests) == 2
        # A digest, never the config: no key, no URL in what is listed or printed.
        for text in (json.dumps(listing(a)), shown.stdout, shown.stderr):
            assert f"apiKey: {SECRET_KEY}" not in text and "baseUrl" not in text
            assert "127.0.0.1:6379" not in text


def test_with_the_memory_store_the_list_is_this_instance(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with FakeProvider("p") as fake:
        config = write_config(tmp_path, fake, tmp_path / "log.db")
        env = {"CHAIN429_STATE_URL": ""}
        with serving("-c", str(config), "--port", str(port), env=env) as proc:
            wait_healthy(url, proc, timeout=30)
            answer = httpx.get(
                f"{url}/v1/admin/instances", headers={"authorization": "Bearer k"}, timeout=10
            )
            body = answer.json()
            assert body["store"] == "memory" and body["configs_differ"] is False
            assert [r["pid"] for r in body["instances"]] == [proc.pid]
            unauthorized = httpx.get(f"{url}/v1/admin/instances", timeout=10)
            assert unauthorized.status_code == 401 and unauthorized.json()["error"]["message"]
