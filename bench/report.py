"""The benchmark's tables, chain429's added cost, and the goals (used by run.py).

Each result is one load-generator run (`loadgen.py` JSON) plus `target`
("direct", "chain429", or "redis": chain429 on the Redis state store), `mode`
("plain" or "stream") and `server_cpu`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The performance goals reported against. Plain: chain429 adds at most 1 ms at p50
# to a lone request, and one worker serves >= 1,000 requests/s at 32 concurrent
# clients. Streaming (8 content chunks per stream): one worker serves >= 700
# streams/s at 32 concurrent clients.
GOAL_ADDED_P50_MS_C1 = 1.0
GOAL_RPS_C32 = 1000.0
GOAL_STREAMS_C32 = 700.0
# The Redis state store (run.py --state): at most 0.3 ms more than the in-memory
# store at p50 for a lone request, and at least 80% of its requests/s at c=32.
GOAL_REDIS_ADDED_P50_MS_C1 = 0.3
GOAL_REDIS_RPS_SHARE_C32 = 0.8

Result = dict[str, Any]


def _find(results: list[Result], mode: str, target: str, conc: int) -> Result | None:
    return next(
        (
            r
            for r in results
            if r["mode"] == mode and r["target"] == target and r["concurrency"] == conc
        ),
        None,
    )


def added(results: list[Result], concurrencies: Sequence[int]) -> list[Result]:
    """chain429 minus direct, per mode and concurrency: the proxy's own cost."""
    rows = []
    for mode in ("plain", "stream"):
        for conc in concurrencies:
            direct = _find(results, mode, "direct", conc)
            proxied = _find(results, mode, "chain429", conc)
            if direct is None or proxied is None:
                continue
            row = {
                "mode": mode,
                "concurrency": conc,
                "added_p50_ms": proxied["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": proxied["p99_ms"] - direct["p99_ms"],
                "direct_rps": direct["rps"],
                "chain429_rps": proxied["rps"],
                "chain429_errors": proxied["errors"],
            }
            if mode == "stream":
                row["added_ttfb_p50_ms"] = proxied["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
                row["added_ttfb_p99_ms"] = proxied["ttfb_p99_ms"] - direct["ttfb_p99_ms"]
            rows.append(row)
    return rows


def state_cost(results: list[Result], concurrencies: Sequence[int]) -> list[Result]:
    """chain429 on Redis minus chain429 in memory, per mode and concurrency."""
    rows = []
    for mode in ("plain", "stream"):
        for conc in concurrencies:
            memory = _find(results, mode, "chain429", conc)
            shared = _find(results, mode, "redis", conc)
            if memory is None or shared is None:
                continue
            rows.append(
                {
                    "mode": mode,
                    "concurrency": conc,
                    "added_p50_ms": shared["p50_ms"] - memory["p50_ms"],
                    "added_p99_ms": shared["p99_ms"] - memory["p99_ms"],
                    "memory_rps": memory["rps"],
                    "redis_rps": shared["rps"],
                    "rps_share": shared["rps"] / memory["rps"] if memory["rps"] else 0.0,
                    "redis_errors": shared["errors"],
                }
            )
    return rows


def _cpu(r: Result) -> str:
    return f"{r['server_cpu']:>12.0%}{r.get('client_cpu', float('nan')):>12.0%}"


def render_plain(results: list[Result], extra: list[Result]) -> list[str]:
    lines = [
        "plain completions",
        f"{'target':<10}{'conc':>6}{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
        f"{'server cpu':>12}{'client cpu':>12}",
    ]
    for r in results:
        lines.append(
            f"{r['target']:<10}{r['concurrency']:>6}{r['rps']:>11,.0f}"
            f"{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['errors']:>8}{_cpu(r)}"
        )
    lines += ["", "added by chain429 (chain429 - direct):"]
    for a in extra:
        share = a["chain429_rps"] / a["direct_rps"] if a["direct_rps"] else float("nan")
        lines.append(
            f"  c={a['concurrency']:<4} p50 {a['added_p50_ms']:+.3f} ms   "
            f"p99 {a['added_p99_ms']:+.3f} ms   "
            f"rps {a['chain429_rps']:,.0f} vs {a['direct_rps']:,.0f} direct ({share:.1%})"
        )
    return lines


def render_stream(results: list[Result], extra: list[Result]) -> list[str]:
    lines = [
        "streams (SSE, 8 content chunks; TTFB = first `data:` event, total = terminator)",
        f"{'target':<10}{'conc':>6}{'streams/s':>11}{'ttfb p50':>10}{'ttfb p99':>10}"
        f"{'total p50':>11}{'total p99':>11}{'errors':>8}{'server cpu':>12}{'client cpu':>12}",
    ]
    for r in results:
        lines.append(
            f"{r['target']:<10}{r['concurrency']:>6}{r['rps']:>11,.0f}"
            f"{r['ttfb_p50_ms']:>10.3f}{r['ttfb_p99_ms']:>10.3f}"
            f"{r['p50_ms']:>11.3f}{r['p99_ms']:>11.3f}{r['errors']:>8}{_cpu(r)}"
        )
    lines += ["", "added by chain429 (chain429 - direct), ms:"]
    for a in extra:
        share = a["chain429_rps"] / a["direct_rps"] if a["direct_rps"] else float("nan")
        lines.append(
            f"  c={a['concurrency']:<4} ttfb p50 {a['added_ttfb_p50_ms']:+.3f}  "
            f"p99 {a['added_ttfb_p99_ms']:+.3f}   total p50 {a['added_p50_ms']:+.3f}  "
            f"p99 {a['added_p99_ms']:+.3f}   streams/s {a['chain429_rps']:,.0f} vs "
            f"{a['direct_rps']:,.0f} direct ({share:.1%})"
        )
    return lines


def render(results: list[Result], extra: list[Result], state: Sequence[Result] = ()) -> str:
    """One table per mode measured, each followed by what chain429 adds (and Redis adds)."""
    blocks = []
    for mode, draw in (("plain", render_plain), ("stream", render_stream)):
        rows = [r for r in results if r["mode"] == mode]
        if rows:
            lines = draw(rows, [a for a in extra if a["mode"] == mode])
            shared = [s for s in state if s["mode"] == mode]
            if shared:
                lines += ["", "added by the Redis state store (redis - chain429 in memory):"]
            for a in shared:
                lines.append(
                    f"  c={a['concurrency']:<4} p50 {a['added_p50_ms']:+.3f} ms   "
                    f"p99 {a['added_p99_ms']:+.3f} ms   rps {a['redis_rps']:,.0f} vs "
                    f"{a['memory_rps']:,.0f} in memory ({a['rps_share']:.1%})"
                )
            blocks.append("\n".join(lines))
    errors = [
        f"  {r['mode']} {r['target']} c={r['concurrency']}: "
        + ", ".join(f"{kind} x{n}" for kind, n in sorted(r["error_kinds"].items()))
        for r in results
        if r["errors"]
    ]
    if errors:
        blocks.append("\n".join(["errors by kind (measured window):", *errors]))
    return "\n\n".join(blocks)


def goals(extra: list[Result], state: Sequence[Result] = ()) -> dict[str, Any]:
    by_key = {(a["mode"], a["concurrency"]): a for a in extra}
    out: dict[str, Any] = {}
    shared = {(a["mode"], a["concurrency"]): a for a in state}
    if (row := shared.get(("plain", 1))) is not None:
        value = row["added_p50_ms"]
        out["redis_added_p50_c1"] = {
            "value_ms": value,
            "goal_ms": GOAL_REDIS_ADDED_P50_MS_C1,
            "met": value <= GOAL_REDIS_ADDED_P50_MS_C1,
        }
    if (row := shared.get(("plain", 32))) is not None:
        value = row["rps_share"]
        out["redis_rps_share_c32"] = {
            "value": value,
            "goal": GOAL_REDIS_RPS_SHARE_C32,
            "met": value >= GOAL_REDIS_RPS_SHARE_C32,
        }
    if (row := by_key.get(("plain", 1))) is not None:
        value = row["added_p50_ms"]
        out["added_p50_c1"] = {
            "value_ms": value,
            "goal_ms": GOAL_ADDED_P50_MS_C1,
            "met": value <= GOAL_ADDED_P50_MS_C1,
        }
    if (row := by_key.get(("plain", 32))) is not None:
        value = row["chain429_rps"]
        out["rps_c32"] = {"value": value, "goal": GOAL_RPS_C32, "met": value >= GOAL_RPS_C32}
    if (row := by_key.get(("stream", 32))) is not None:
        value = row["chain429_rps"]  # complete, verified streams only
        out["streams_c32"] = {
            "value": value,
            "goal": GOAL_STREAMS_C32,
            "errors": row["chain429_errors"],
            "met": value >= GOAL_STREAMS_C32,
        }
    return out


def goal_lines(met: dict[str, Any]) -> list[str]:
    lines = []
    for name, goal in met.items():
        if name == "added_p50_c1":
            text = f"added p50 at c=1 {goal['value_ms']:.3f} ms (goal <= {goal['goal_ms']:g} ms)"
        elif name == "redis_added_p50_c1":
            text = (
                f"Redis store adds {goal['value_ms']:.3f} ms p50 at c=1 over memory "
                f"(goal <= {goal['goal_ms']:g} ms)"
            )
        elif name == "redis_rps_share_c32":
            text = (
                f"Redis store keeps {goal['value']:.0%} of in-memory req/s at c=32 "
                f"(goal >= {goal['goal']:.0%})"
            )
        elif name == "rps_c32":
            text = f"chain429 at c=32 {goal['value']:,.0f} req/s (goal >= {goal['goal']:,.0f})"
        else:
            text = (
                f"chain429 at c=32 {goal['value']:,.0f} streams/s "
                f"(goal >= {goal['goal']:,.0f}; {goal['errors']} errors)"
            )
        lines.append(f"goal {'met   ' if goal['met'] else 'MISSED'}  {text}")
    return lines
