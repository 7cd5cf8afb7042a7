"""Commands that read a running server's request log: `stats` and `logs`.

Both ask the stats API (`/v1/stats/*`), never the database file: the CLI
works the same against a local server and a remote one, and sees exactly
what the web UI sees.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import typer

from . import output
from .client import AdminClient, reports_errors
from .options import ConfigOption, JsonOption, ServerOption
from .output import plural, print_json, table

SinceOption = Annotated[
    str, typer.Option("--since", help="Start: an age (24h, 7d, 30m) or an ISO 8601 time.")
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="End (default: now).", show_default=False)
]

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="Only requests of this route: chat, completions or embeddings.",
        show_default=False,
    ),
]

FOLLOW_WINDOW_MS = 15 * 60 * 1000  # how far back each --follow poll looks for late records


def _spend(client: AdminClient, by: str, since: str, until: str | None) -> dict[str, Any] | None:
    """`/v1/stats/spend` totalled by `by`, or None from a server too old to have it."""
    code, body = client.request(
        "GET",
        "/v1/stats/spend",
        params={"since": since, "until": until, "by": by},
        accept=(200, 404),
    )
    return body if code == 200 and isinstance(body, dict) else None


def _cost_text(cost: Any, estimated: Any) -> str:
    """A cost as the tables show it: `$0.02`, `~$0.02` when (partly) from estimated
    tokens, `-` for nothing priced."""
    from chain429.routing.budget import usd

    if cost is None:
        return "-"
    return ("~" if estimated else "") + usd(float(cost))


def _cost_of(spend: dict[str, Any] | None, by: str) -> Callable[[Any], str]:
    """A row's cost cell from a spend answer totalled by `by`."""
    rows = {r.get(by): r for r in (spend or {}).get("data") or []}

    def cost(name: Any) -> str:
        row = rows.get(name) or {}
        return _cost_text(row.get("cost_usd"), row.get("estimated_usd"))

    return cost


def _provider_rows(
    data: list[dict[str, Any]], cost: Callable[[Any], str] = lambda _: "-"
) -> list[list[str]]:
    rows = []
    for p in data:
        attempts = p.get("attempts") or {}
        outcomes = attempts.get("outcomes") or {}
        rows.append(
            [
                # The requests no provider answered (refused, exhausted) are a row too.
                output.cell(p.get("provider")) if p.get("provider") else "(unanswered)",
                str(p.get("requests", 0)),
                str(attempts.get("calls", 0)),
                str(attempts.get("skips", 0)),
                str((p.get("tokens") or {}).get("total", 0)),
                output.ms((p.get("latency_ms") or {}).get("p50")),
                output.ms((p.get("latency_ms") or {}).get("p95")),
                cost(p.get("provider")),
                " ".join(f"{k}={v}" for k, v in outcomes.items()),
            ]
        )
    return rows


def _chain_rows(
    data: list[dict[str, Any]],
    key: str = "chain",
    cost: Callable[[Any], str] = lambda _: "-",
) -> list[list[str]]:
    """Rows of a per-chain (or per-endpoint: `key`) answer; the last cell is the cost."""
    return [
        [
            output.cell(c.get(key)) if c.get(key) else "(no chain)",  # the model named none
            str(c.get("requests", 0)),
            str(c.get("successes", 0)),
            str(c.get("errors", 0)),
            f"{(c.get('error_rate') or 0) * 100:.1f}",
            str((c.get("tokens") or {}).get("total", 0)),
            output.ms((c.get("latency_ms") or {}).get("p50")),
            output.ms((c.get("latency_ms") or {}).get("p95")),
            cost(c.get(key)),
        ]
        for c in data
    ]


def _client_rows(
    data: list[dict[str, Any]], cost: Callable[[Any], str] = lambda _: "-"
) -> list[list[str]]:
    return [
        [
            output.cell(c.get("client")) if c.get("client") else "(anonymous)",
            str(c.get("requests", 0)),
            str(c.get("successes", 0)),
            str(c.get("errors", 0)),
            str(c.get("rate_limited", 0)),
            str((c.get("tokens") or {}).get("total", 0)),
            output.ms((c.get("latency_ms") or {}).get("p50")),
            output.ms((c.get("latency_ms") or {}).get("p95")),
            cost(c.get("client")),
        ]
        for c in data
    ]


def _summary_line(s: dict[str, Any], spend: dict[str, Any] | None = None) -> str:
    latency = s.get("latency_ms") or {}
    timing = ", ".join(
        f"{name} {output.ms(latency.get(name))}{'' if latency.get(name) is None else ' ms'}"
        for name in ("avg", "p50", "p95")
    )
    return (
        f"{plural(s.get('requests', 0), 'request')}, {s.get('successes', 0)} ok, "
        f"{plural(s.get('errors', 0), 'error')} ({(s.get('error_rate') or 0) * 100:.1f}%), "
        f"{plural(s.get('attempts', 0), 'upstream attempt')}, "
        f"{plural((s.get('tokens') or {}).get('total', 0), 'token')}; latency {timing}; "
        f"{_spent(spend)}{output.cell(s.get('since'))} to {output.cell(s.get('until'))}"
    )


def _spent(spend: dict[str, Any] | None) -> str:
    """`$1.25 spent (a part estimated); ` from a spend answer, or nothing."""
    if not spend or not spend.get("requests"):
        return ""
    from chain429.routing.budget import usd

    estimated = " (a part estimated)" if spend.get("estimated_usd") else ""
    return f"{usd(float(spend.get('cost_usd') or 0))} spent{estimated}; "


Dimension = Literal["provider", "chain", "client"]
_PLURAL: dict[str, str] = {"provider": "providers", "chain": "chains", "client": "clients"}


def stats(
    server: ServerOption = None,
    config: ConfigOption = None,
    since: SinceOption = "24h",
    until: UntilOption = None,
    endpoint: EndpointOption = None,
    by: Annotated[
        Dimension | None,
        typer.Option(
            "--by",
            help="One table: per provider, chain or client (a `clients:` name; requests "
            "refused by a client's own limits are its RATE LIMITED). Default: providers and "
            "chains.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Requests, errors, tokens, latency and spend per provider and per chain (or per
    client), and per route (chat, completions, embeddings), from the request log.

    COST is what priced answers cost (their tokens at their entry's `price`); `~` marks a
    cost partly from estimated tokens, `-` nothing priced. Spend is not split by route:
    with `--endpoint` the COST column is left out.
    """
    wanted: tuple[Dimension, ...] = ("provider", "chain") if by is None else (by,)
    asked = {"since": since, "until": until}
    with AdminClient.connect(server, config) as client:
        summary = client.get("/v1/stats/summary", **asked, endpoint=endpoint)
        found = {
            name: client.get(f"/v1/stats/{_PLURAL[name]}", **asked, endpoint=endpoint)["data"]
            for name in wanted
        }
        # Per route, unless the tables are of one route already.
        per_route = by is None and endpoint is None
        endpoints = client.get("/v1/stats/endpoints", **asked)["data"] if per_route else None
        spend = {name: None if endpoint else _spend(client, name, since, until) for name in wanted}
    total = spend[wanted[0]]
    if as_json:
        print_json(
            {
                "summary": summary,
                **{_PLURAL[name]: rows for name, rows in found.items()},
                **({"endpoints": endpoints} if endpoints is not None else {}),
                "spend": {
                    **{_PLURAL[name]: (spend[name] or {}).get("data") for name in wanted},
                    "total_usd": (total or {}).get("cost_usd"),
                },
            }
        )
        return
    only = f" ({endpoint} only)" if endpoint else ""
    columns = ["REQUESTS", "OK", "ERRORS", "ERROR %", "TOKENS", "P50 MS", "P95 MS"]
    for name, rows in found.items():
        cost = _cost_of(spend[name], name)
        if name == "provider":
            header = ["PROVIDER", "ANSWERED", "CALLS", "SKIPS", "TOKENS", "P50 MS", "P95 MS"]
            header += ["COST", "OUTCOMES"]
            cells = _provider_rows(rows, cost)
        elif name == "chain":
            header, cells = ["CHAIN", *columns, "COST"], _chain_rows(rows, cost=cost)
        else:
            header = ["CLIENT", "REQUESTS", "OK", "ERRORS", "RATE LIMITED", "TOKENS", "P50 MS"]
            header += ["P95 MS", "COST"]
            cells = _client_rows(rows, cost)
        if endpoint:  # spend is not split by route: no COST column rather than a wrong one
            at = header.index("COST")
            header = header[:at] + header[at + 1 :]
            cells = [row[:at] + row[at + 1 :] for row in cells]
        table(header, cells, title=f"{_PLURAL[name].capitalize()} since {since}{only}")
        typer.echo("")
    # Chat alone is every request of a chat-only proxy: a table would say nothing new.
    if endpoints is not None and {row.get("endpoint") for row in endpoints} - {"chat"}:
        cells = [row[:-1] for row in _chain_rows(endpoints, "endpoint")]
        table(["ENDPOINT", *columns], cells, title=f"Endpoints since {since}")
        typer.echo("")
    typer.echo(_summary_line(summary, total) + only)


# -- logs -------------------------------------------------------------------

LOG_COLUMNS = [
    "TIME",
    "ID",
    "CHAIN",
    "ANSWERED BY",
    "STATUS",
    "OUTCOME",
    "ATTEMPTS",
    "MS",
    "TOKENS",
    "COST",
    "CLIENT",
    "ENDPOINT",
]
LOG_WIDTHS = [19, 30, 12, 28, 6, 24, 8, 9, 6, 9, 12, 11]


def _log_row(r: dict[str, Any]) -> list[str]:
    answered = f"{r['provider']}/{r['model']}" if r.get("provider") else "-"
    return [
        output.time_text(r.get("time")),
        str(r.get("id")),
        str(r.get("chain") or "-"),
        answered,
        str(r.get("status") if r.get("status") is not None else "-"),
        str(r.get("outcome")),
        str(r.get("attempts", 0)),
        output.ms(r.get("latency_ms")),
        str(r.get("total_tokens") or 0) + ("~" if r.get("tokens_estimated") else ""),
        _cost_text(r.get("cost_usd"), r.get("cost_estimated")),
        str(r.get("client") or "-"),
        str(r.get("endpoint") or "chat"),
    ]


def _show_request(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    row = _log_row(record)
    if record.get("route") == "alias":  # the name the app asked for, and the chain it got
        row[2] = f"{row[2]} (alias {record.get('requested_model')})"
    from chain429.routing.budget import usd

    cost = record.get("cost_usd")
    typer.echo(
        f"{row[1]} at {row[0]}: {row[-1]}, chain {row[2]} -> {row[3]}, {row[4]} {row[5]}, "
        f"{plural(int(row[6]), 'attempt')}, {row[7]} ms, "
        f"{plural(record.get('total_tokens') or 0, 'token')}"
        f"{' (estimated)' if record.get('tokens_estimated') else ''}"
        + ("" if cost is None else f", cost {usd(float(cost))}")
        + (" (estimated)" if cost is not None and record.get("cost_estimated") else "")
        + (f", client {record['client']}" if record.get("client") else "")
    )
    table(
        ["#", "ENTRY", "OUTCOME", "STATUS", "MS", "COOLDOWN MS", "REASON"],
        [
            [
                str(a.get("order")),
                f"{a.get('provider')}/{a.get('model')}",
                str(a.get("outcome")),
                "" if a.get("status") is None else str(a.get("status")),
                output.ms(a.get("latency_ms")),
                "" if a.get("cooldown_ms") is None else str(a.get("cooldown_ms")),
                a.get("reason") or "",
            ]
            for a in record.get("trail", [])
        ],
        title="Attempt trail",
    )


class _LinePrinter:
    """Rows one at a time (for --follow): aligned on a terminal, tab-separated when piped."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def header(self) -> None:
        if not self.as_json:
            self._line(LOG_COLUMNS, bold=True)
            sys.stdout.flush()

    def record(self, record: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            self._line(_log_row(record))
        sys.stdout.flush()

    def _line(self, cells: list[str], bold: bool = False) -> None:
        if not output.interactive():
            output.plain_line(cells)
            return
        text = "  ".join(c.ljust(w) for c, w in zip(cells, LOG_WIDTHS, strict=True)).rstrip()
        output.stdout.print(text, style="bold" if bold else None, markup=False)


def logs(
    request_id: Annotated[
        str | None, typer.Argument(help="Show this request's attempt trail.")
    ] = None,
    chain: Annotated[str | None, typer.Option(help="Only this chain.")] = None,
    provider: Annotated[
        str | None, typer.Option(help="Only requests this provider answered.")
    ] = None,
    status: Annotated[int | None, typer.Option(help="Only this HTTP status.")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="Only this outcome (success, all_providers_exhausted, ...).")
    ] = None,
    endpoint: EndpointOption = None,
    client_name: Annotated[
        str | None,
        typer.Option(
            "--client",
            help="Only requests of this client (its `clients:` name); `-`: those sent "
            "without a client key.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many requests.")] = 20,
    since: SinceOption = "24h",
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep polling (every 1 s) and print new requests, oldest first."
        ),
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="With --follow: stop after N new requests.")
    ] = None,
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recent requests from the request log, newest first; or one request's attempt trail."""
    filters = {
        "chain": chain,
        "provider": provider,
        "status": status,
        "outcome": outcome,
        "endpoint": endpoint,
        "client": client_name,
    }
    with AdminClient.connect(server, config) as client:
        if request_id is not None:
            _show_request(client.get(f"/v1/stats/requests/{request_id}"), as_json)
            return

        def first() -> dict[str, Any]:
            page: dict[str, Any] = client.get(
                "/v1/stats/requests", since=since, limit=limit, **filters
            )
            return page

        if not follow:
            body = first()
            if as_json:
                print_json(body)
            else:
                table(LOG_COLUMNS, [_log_row(r) for r in body["data"]], title="Recent requests")
            return
        try:
            _follow(client, first, filters, count, as_json)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def _follow(
    client: AdminClient,
    first: Callable[[], dict[str, Any]],
    filters: dict[str, Any],
    count: int | None,
    as_json: bool,
) -> None:
    def window(server_now_ms: int | None) -> dict[str, Any]:
        """Everything logged lately: a record is written when its request ends, late."""
        since = None
        if server_now_ms is not None:
            moment = datetime.fromtimestamp((server_now_ms - FOLLOW_WINDOW_MS) / 1000, UTC)
            since = moment.isoformat(timespec="milliseconds")
        page: dict[str, Any] = client.get("/v1/stats/requests", since=since, limit=1000, **filters)
        return page

    # What is already logged is not new; ask before the listing so nothing falls between.
    body = window(None)
    seen = {r["id"]: int(r["time_ms"]) for r in body["data"]}
    server_now = int(body["until_ms"])
    printer = _LinePrinter(as_json)
    printer.header()
    for record in reversed(first()["data"]):
        printer.record(record)
        seen[record["id"]] = int(record["time_ms"])
    printed = 0
    while count is None or printed < count:
        time.sleep(1.0)
        body = window(server_now)
        server_now = int(body["until_ms"])
        for record in reversed(body["data"]):
            if record["id"] in seen:
                continue
            seen[record["id"]] = int(record["time_ms"])
            printer.record(record)
            printed += 1
            if count is not None and printed >= count:
                return
        horizon = server_now - FOLLOW_WINDOW_MS
        seen = {k: t for k, t in seen.items() if t >= horizon}


# -- diff -------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    for command in (stats, logs):
        app.command()(reports_errors(command))
