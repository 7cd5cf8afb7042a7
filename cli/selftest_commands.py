"""`chain429 selftest`: what your clients get when a provider fails, before it fails.

It answers "what happens to my app when Groq starts failing?" with the user's
own chains and settings, and none of their providers: every provider becomes
the shipped fake (chain429.fakes.matrix does the work; the faults are
chain429.fakes.faults, the same ones the tests play), so no network is used,
no key is read and no quota is spent. The table is per chain and fault;
`--json` gives every request with its trace and each entry's calls.

Exit 1 when any fault ends in a hang or a truncated success: those are the
two outcomes a client cannot handle (a clean error, it can).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from . import output
from .options import ConfigOption, JsonOption
from .output import fail, plural

if TYPE_CHECKING:
    from chain429.fakes.matrix import RunResult

_OUTCOME_WORDS = {
    "complete": "answer",
    "error": "error",
    "truncated": "TRUNCATED",
    "hang": "HANG",
}


def _cell(run: RunResult) -> str:
    """One run as a person reads it: what came back, from whom, how long it took."""
    got = run.received
    if len(got) == 1:
        one = got[0]
        who = one.code if one.outcome == "error" else one.provider
        what = _OUTCOME_WORDS[one.outcome] + (f" {who}" if who else "")
        # The provider header names the entry whose stream the client got; an entry
        # called after it finished that stream (midStream: continue).
        called = list(run.calls)  # in the order of their first call
        if one.outcome == "complete" and one.provider in called:
            after = called[called.index(one.provider) + 1 :]
            if after:
                what += f", finished by {after[-1]}"
        return f"{what} in {one.seconds:.1f} s"
    answers = sum(r.outcome == "complete" for r in got)
    verdict = "" if run.verdict in ("complete", "error") else f", {_OUTCOME_WORDS[run.verdict]}"
    slowest = max(r.seconds for r in got)
    return f"{answers}/{len(got)} answers{verdict}, slowest {slowest:.1f} s"


def selftest(
    config: ConfigOption = None,
    chain: Annotated[
        list[str] | None,
        typer.Option(
            "--chain",
            help="Test only this chain (repeat the option). Default: every chat chain.",
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault", help="Play only this fault (repeat the option). Default: all of them."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Play every provider fault against each of your chat chains, with local fakes.

    Each chain keeps its real settings (retry, breaker, timeouts, midStream...);
    every provider is replaced by a local fake provider (no network, no key read,
    no quota spent). The first entry of each chain plays each fault in turn (429s,
    5xx, resets, hangs, slow or cut streams, 400s, flapping), the other entries
    answer; a client sends the requests, plain and streaming, and the table says
    what it received and how long it took (docs/failover.md explains the rows).
    Exit 1 if any fault ends in a hang or a truncated success.
    """
    import asyncio

    from chain429.config.errors import ConfigError
    from chain429.config.loader import find_config_path
    from chain429.fakes.faults import FAULTS, fault_named
    from chain429.fakes.matrix import give_up_after_s, load_shape, run_matrix
    from chain429.server import logs

    path = find_config_path(str(config) if config else None)
    try:
        shape = load_shape(path)
    except ConfigError as err:
        for issue in err.issues:
            output.stderr.print(str(issue), markup=False, highlight=False)
        raise fail(
            f"{path} is not a config selftest can play (see `chain429 validate`; selftest "
            "reads no environment variable: each ${VAR} is empty here)"
        ) from None
    try:
        faults = [fault_named(name) for name in fault] if fault else list(FAULTS)
    except KeyError as err:
        raise fail(str(err.args[0])) from None
    # The faults are a chat client's (streams cut mid-answer, slow first tokens...).
    chat = [c.name for c in shape.chains if c.kind == "chat"]
    names = chain or chat
    unknown = [name for name in names if shape.chain(name) is None]
    if unknown:
        known = ", ".join(c.name for c in shape.chains) or "none"
        raise fail(f"no chain named {unknown[0]!r} in {path}; chains: {known}")
    embeddings = [name for name in names if name not in chat]
    if embeddings:
        raise fail(
            f"chain {embeddings[0]!r} is an embeddings chain: selftest plays chat faults "
            f"(chat chains: {', '.join(chat) or 'none'}); try it with `chain429 chain test`"
        )
    if not names:
        raise fail(f"{path} has no chat chains to test")
    # The server's own log lines (a stream that ended early...) are what the
    # table reports; only real trouble is worth a line.
    logs.configure("error")
    output.say(
        f"selftest: {plural(len(faults), 'fault')} on the first entry of "
        f"{plural(len(names), 'chain')}, plain and streaming, on local "
        f"fakes (a client gives up after {give_up_after_s(shape):.0f} s)..."
    )
    started = time.monotonic()
    runs = asyncio.run(run_matrix(shape, faults=faults, chains=names))
    seconds = time.monotonic() - started
    bad = [run for run in runs if not run.ok]
    if as_json:
        output.print_json(
            {
                "config": str(path),
                "ok": not bad,
                "seconds": round(seconds, 3),
                "faults": [{"name": f.name, "summary": f.summary, "fake": f.cli} for f in faults],
                "runs": [run.as_json() for run in runs],
            }
        )
    else:
        by_key = {(run.chain, run.fault, run.stream): run for run in runs}
        rows = []
        for name in names:
            for f in faults:
                plain, stream = by_key[(name, f.name, False)], by_key[(name, f.name, True)]
                burst = max(plain.max_calls_in_window(), stream.max_calls_in_window())
                rows.append([name, f.name, _cell(plain), _cell(stream), burst])
        output.table(["chain", "fault", "plain", "stream", "most calls in 1.5 s"], rows)
    if bad:
        listed = ", ".join(f"{r.chain}/{r.fault}/{'stream' if r.stream else 'plain'}" for r in bad)
        output.say(f"{len(bad)} of {len(runs)} runs hung or were truncated: {listed}")
        raise typer.Exit(1)
    output.say(
        f"all {len(runs)} runs ended in a complete answer or a clean error ({seconds:.0f} s)"
    )


def register(app: typer.Typer) -> None:
    """Add this module's command to the CLI."""
    app.command()(selftest)
