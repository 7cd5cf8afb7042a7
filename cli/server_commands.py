"""Commands that talk to a running server: status, reload, diff; and context.

Each finds its server with `chain429.cli.client` (`--server`, `$CHAIN429_SERVER`,
the current context, else the config file's host and port) and turns a server
that is down or says no into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import contexts, log_commands, output
from .client import AdminClient, reports_errors
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, print_json, say, table

if TYPE_CHECKING:
    from rich.table import Table

    from chain429.config.model import Config

# rich's live view and the config model load inside the commands that use them
# (see main.py on start-up).

# -- formatting -------------------------------------------------------------


def _issue_lines(errors: Any, file: Path | str | None = None) -> list[str]:
    """The server's `[{file?, line, path, message}]` as `file:line: path: message`."""
    from chain429.config.errors import ConfigIssue

    if not isinstance(errors, list):
        return [str(errors)]
    return [
        str(
            ConfigIssue(
                e.get("file") or (str(file) if file else None),
                e.get("line"),
                e.get("path") or "",
                e.get("message") or "",
            )
        )
        for e in errors
        if isinstance(e, dict)
    ]


# -- reload -----------------------------------------------------------------


def reload(
    server: ServerOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Tell the running server to reload its config file; prints the new generation.

    Exit 1 when the file is invalid (its problems are printed; the server keeps
    running the config it has), 2 when the server cannot be reached.
    """
    with AdminClient.connect(server, config) as client:
        status, body = client.request("POST", "/v1/admin/reload", accept=(200, 422))
    if as_json:
        print_json(body)
    elif status == 200:
        verb = "reloaded" if body.get("reloaded") else "unchanged"
        typer.echo(f"{verb}: generation {body.get('generation')}")
    else:
        for line in _issue_lines(body.get("errors")):
            typer.echo(line)
    if status != 200:
        raise fail(
            f"the config file is invalid; the server keeps generation {body.get('generation')}", 1
        )


# -- status -----------------------------------------------------------------

STATUS_COLUMNS = ["CHAIN", "ENTRY", "STATE", "REASON", "UNTIL", "REMAINING", "IN FLIGHT"]


def _quota_text(quotas: Any) -> str:
    parts = []
    for q in quotas or []:
        left = q.get("remaining")
        amount = f"{left}/{q['limit']}" if q.get("limit") is not None else f"{left}"
        parts.append(f"{amount} {q.get('kind')}/{q.get('window')}")
    return ", ".join(parts)


def _reason_text(entry: dict[str, Any]) -> str:
    """Why an entry is in its state; for a pause, since when (it has no UNTIL)."""
    reason = str(entry.get("reason") or "")
    paused = entry.get("paused")
    if isinstance(paused, dict) and paused.get("since"):
        reason = f"{reason}, since {output.local_time(str(paused['since']))}"
    return reason


def _status_rows(limits: dict[str, Any]) -> list[list[str]]:
    quotas = {b.get("bucket"): b.get("quotas") for b in limits.get("buckets", [])}
    return [
        [
            str(e.get("chain")),
            f"{e.get('provider')}/{e.get('model')}",
            str(e.get("state")),
            _reason_text(e),
            output.until_text(e.get("until")),
            _quota_text(quotas.get(e.get("bucket"))),
            str(e.get("in_flight", 0)),
        ]
        for e in limits.get("entries", [])
    ]


BUDGET_COLUMNS = ["PAID BUDGET", "CAP", "SPENT", "RESERVED", "LEFT", "RESETS"]


def _budgets(client: AdminClient) -> dict[str, Any] | None:
    """`/v1/admin/budgets`, or None from a server too old to have it (or a key that may
    not read it)."""
    code, body = client.request("GET", "/v1/admin/budgets", accept=(200, 403, 404))
    return body if code == 200 and isinstance(body, dict) else None


def _print_budgets(report: dict[str, Any] | None) -> None:
    """Each paid budget's day so far (nothing when none is set)."""
    from chain429.routing.budget import usd, usd_left

    budgets = (report or {}).get("budgets") or []
    if not budgets:
        return
    rows = [
        [
            f"client {b['client']}" if b.get("client") else "everybody",
            usd(float(b.get("cap_usd") or 0)),
            usd(float(b.get("spent_usd") or 0)),
            usd(float(b.get("reserved_usd") or 0)),
            usd_left(float(b.get("left_usd") or 0)),
            output.until_text(b.get("resets_at")),
        ]
        for b in budgets
    ]
    title = f"Paid budgets today ({(report or {}).get('time_zone')})"
    if not output.interactive():
        say(title)
    table(BUDGET_COLUMNS, rows, title=title)


def _status_title(client: AdminClient, health: dict[str, Any]) -> str:
    title = (
        f"chain429 {health.get('version')} at {client.base_url}, "
        f"config generation {health.get('config_generation')}"
    )
    problems = [p for p in (_config_problem(health), _log_problem(health.get("log"))) if p]
    return f"{title}; {health.get('status')}: {'; '.join(problems)}" if problems else title


def _config_problem(health: dict[str, Any]) -> str:
    rejected = health.get("config_error")
    if not rejected:
        return ""
    when = rejected.get("rejected_at")
    at = datetime.fromtimestamp(when).strftime("%H:%M:%S") if when else "?"
    return f"the config file on disk was rejected at {at}; the last good one serves"


def _print_config_error(health: dict[str, Any]) -> None:
    """Why the file on disk is rejected, on top and in red (admin keys see the reasons)."""
    problem = _config_problem(health)
    if not problem:
        return
    output.stderr.print(f"error: {problem}", style="bold red", markup=False, highlight=False)
    errors = (health.get("config_error") or {}).get("errors")
    if errors is None:
        hint = "  (the reasons are shown to an admin key: set CHAIN429_ADMIN_KEY)"
        output.stderr.print(hint, style="red", markup=False, highlight=False)
    for line in _issue_lines(errors) if errors is not None else []:
        output.stderr.print(f"  {line}", style="red", markup=False, highlight=False)


def _log_problem(log: dict[str, Any] | None) -> str:
    """What the server's request log is losing or holding back (/health's `log`), or ""."""
    if not log:
        return ""
    parts = []
    if log.get("dropped"):
        parts.append(f"{log['dropped']} records dropped")
    if log.get("last_error"):
        parts.append(f"{log.get('pending', 0)} waiting, database failing: {log['last_error']}")
    return f"request log: {', '.join(parts)}" if parts else ""


def status(
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C.")
    ] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, help="With --watch: stop after N refreshes."),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="With --watch: seconds between refreshes.")
    ] = 2.0,
) -> None:
    """Live rate-limit state of every chain entry, the paid budgets' day so far, and the
    server's version and generation.

    When the config file on disk is rejected, its errors come first, in red. When
    that happens, or the server's request log is dropping records or its database
    is failing (/health says `degraded`), the title says so too.
    """
    with AdminClient.connect(server, config) as client:

        def snapshot() -> tuple[dict[str, Any], dict[str, Any]]:
            return client.get("/health"), client.get("/v1/ratelimits")

        if not watch:
            health, limits = snapshot()
            instances = _instances(client)
            budgets = _budgets(client)
            if as_json:
                print_json(
                    {
                        "server": health,
                        "ratelimits": limits,
                        "instances": instances,
                        "budgets": budgets,
                    }
                )
                return
            _print_config_error(health)
            title = _status_title(client, health)
            if not output.interactive():
                say(title)
            table(STATUS_COLUMNS, _status_rows(limits), title=title)
            _print_budgets(budgets)
            _print_instances(instances)
            return
        try:
            _watch_status(client, snapshot, as_json, count, interval)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


INSTANCE_COLUMNS = ["INSTANCE", "HOST", "PID", "VERSION", "GENERATION", "CONFIG", "LAST SEEN"]


def _instances(client: AdminClient) -> dict[str, Any] | None:
    """`/v1/admin/instances`, or None from a server too old to have it."""
    code, body = client.request("GET", "/v1/admin/instances", accept=(200, 404))
    return body if code == 200 and isinstance(body, dict) else None


def _print_instances(listing: dict[str, Any] | None) -> None:
    """The instances sharing the server's state store, and a warning when their configs differ.

    With the memory store nothing is shared and the list is the server itself:
    nothing to add to the table above.
    """
    if not listing or listing.get("store") == "memory":
        return
    found = listing.get("instances") or []
    if listing.get("problem"):
        output.stderr.print(
            f"warning: the other instances cannot be read: {listing['problem']}",
            style="yellow",
            markup=False,
            highlight=False,
        )
    now = time.time()
    rows = [
        [
            f"{r.get('id')}{' (this)' if r.get('id') == listing.get('this') else ''}",
            r.get("host"),
            r.get("pid"),
            r.get("version"),
            r.get("config_generation"),
            r.get("config_digest"),
            f"{max(0.0, now - float(r.get('last_seen') or now)):.0f}s ago",
        ]
        for r in found
    ]
    if not output.interactive():
        say(f"{len(found)} instances share the state store")
    table(INSTANCE_COLUMNS, rows, title=f"{len(found)} instances share the state store")
    if listing.get("configs_differ"):
        digests = sorted({str(r.get("config_digest")) for r in found})
        output.stderr.print(
            f"warning: the instances run different configs (digests {', '.join(digests)}): "
            "each enforces its own limits on the shared counters; give them the same file",
            style="bold yellow",
            markup=False,
            highlight=False,
        )


def _watch_status(
    client: AdminClient, snapshot: Any, as_json: bool, count: int | None, interval: float
) -> None:
    def render() -> tuple[dict[str, Any], dict[str, Any], Table]:
        health, limits = snapshot()
        title = f"{_status_title(client, health)}, {time.strftime('%H:%M:%S')}"
        return health, limits, output.rich_table(STATUS_COLUMNS, _status_rows(limits), title=title)

    if output.interactive() and not as_json:
        from rich.live import Live

        live_table = render()[2]
        with Live(live_table, console=output.stdout, auto_refresh=False) as live:
            done = 1
            while count is None or done < count:
                time.sleep(interval)
                live.update(render()[2], refresh=True)
                done += 1
        return
    done = 0
    while count is None or done < count:
        if done:
            time.sleep(interval)
        health, limits = snapshot()
        if as_json:
            sys.stdout.write(json.dumps({"server": health, "ratelimits": limits}) + "\n")
        else:
            if done:
                sys.stdout.write("\n")
            say(_status_title(client, health))
            table(STATUS_COLUMNS, _status_rows(limits))
        sys.stdout.flush()
        done += 1


# -- stats ------------------------------------------------------------------


def _load_local(path: Path) -> Config:
    from chain429.config.errors import ConfigError
    from chain429.config.loader import load_config

    try:
        return load_config(path)
    except ConfigError as err:
        for issue in err.issues:
            output.stderr.print(str(issue), markup=False, highlight=False)
        raise fail(f"{path} is not a valid config", 2) from None


def diff(
    file: Annotated[
        Path | None,
        typer.Argument(help="The new side (default: the config file, as --config finds it)."),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against", help="Compare with this file instead of the running server's config."
        ),
    ] = None,
    unified: Annotated[
        bool, typer.Option("--unified", "-u", help="A text diff of the YAML.")
    ] = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    config: ConfigOption = None,
) -> None:
    """What would change going from the running server's config (or --against OTHER) to FILE.

    Exit 0 when they are the same, 1 when they differ, 2 on an error (like kubectl diff).
    """
    from chain429.config.loader import find_config_path

    found = find_config_path(str(config) if config else None)
    path = file if file is not None else found
    if against is not None:
        old, new = _load_local(against), _load_local(path)
        from chain429.config.diff import diff_configs, unified_diff

        semantic = diff_configs(old=old, new=new)
        result: dict[str, Any] = {
            "same": semantic.empty,
            "diff": semantic.to_dict(),
            "summary": semantic.summary_lines(),
            "unified": unified_diff(old, new, old_name=str(against), new_name=str(path)),
        }
        old_label = str(against)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else str(err)
            raise fail(f"cannot read {path}: {reason}") from None
        with AdminClient.connect(server, found) as client:
            status_code, result = client.request(
                "POST",
                "/v1/admin/diff",
                content=text,
                content_type="application/yaml",
                accept=(200, 422),
            )
            old_label = f"the server at {client.base_url} (generation {result.get('generation')})"
        if status_code == 422:
            for line in _issue_lines(result.get("errors"), path):
                output.stderr.print(line, markup=False, highlight=False)
            raise fail(f"{path} is not a valid config", 2)
    same = bool(result["same"])
    if as_json:
        print_json(
            {
                "same": same,
                "old": old_label,
                "new": str(path),
                "summary": result["summary"],
                "diff": result["diff"],
                "unified": result["unified"],
            }
        )
    elif same:
        say(f"no differences: {path} matches {old_label}")
    elif unified:
        sys.stdout.write(result["unified"])
    else:
        say(f"going from {old_label} to {path}:")
        styles = {"+": "green", "-": "red", "~": "yellow"}
        for line in result["summary"]:
            output.stdout.print(line, style=styles.get(line[:1]), markup=False)
    if not same:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    for command in (reload, status):
        app.command()(reports_errors(command))
    log_commands.register(app)  # stats, logs: in the order `--help` has always listed
    app.command()(reports_errors(diff))
    contexts.register(app)
