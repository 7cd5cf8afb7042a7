"""REQUEST_OUTCOMES, the one list of a logged request's outcomes, is every word the
code can set: what the stats API's `outcome` filter takes, its OpenAPI enum and the
web UI's Outcome filter (read from that enum) are all that list.

A word added where outcomes are set and not to the list, or left in the list after
the code dropped it, fails here; the filter then takes it (and refuses a typo).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import get_args

from chain429.requestlog.records import REQUEST_OUTCOMES
from chain429.routing import queueing, router, streaming
from chain429.server import auth, client_gate, completions
from chain429.server.openapi import DOCUMENT


def source(module: ModuleType) -> str:
    return Path(inspect.getfile(module)).read_text()


def logged_outcomes() -> set[str]:
    """Every word the server can log as a request's outcome, read from where it is set."""
    # The router's replies: an answer, the provider's refusal of the request, a 503 with
    # its code (all entries out, or the queue giving up).
    words = set(re.findall(r'Reply\([^()]*"([a-z_]+)"', source(router)))
    words.add(inspect.signature(router.exhausted).parameters["code"].default)
    words |= set(re.findall(r'QueueError\(\s*"([a-z_]+)"', source(queueing) + source(router)))
    # A stream that ended badly.
    words |= set(get_args(streaming.StreamFailure))
    # What completions.py sets itself (a refused request: `err.code or "bad_request"`) ...
    handler = source(completions)
    words |= set(re.findall(r'record\.outcome = [^\n]*?"([a-z_]+)"', handler))
    # ... and the codes of the refusals raised before any provider is asked: which chain
    # (completions.py), whether this client may use it now (client_gate.py), who asked.
    words |= set(re.findall(r'code="([a-z_]+)"', handler + source(client_gate)))
    assert 'code="invalid_api_key"' in source(auth)
    words.add("invalid_api_key")
    return words


def test_the_outcome_list_is_every_outcome_the_code_sets():
    listed = list(REQUEST_OUTCOMES)
    assert len(listed) == len(set(listed)), "an outcome listed twice"
    expected = logged_outcomes()
    # What the reading found, so a change in the code's shape cannot empty the check.
    assert {"success", "client_error", "all_providers_exhausted", "queue_full"} <= expected
    assert {"client_rate_limited", "model_not_allowed", "wrong_endpoint"} <= expected
    assert set(listed) == expected, (
        f"missing in REQUEST_OUTCOMES: {sorted(expected - set(listed))}; "
        f"not set by the code: {sorted(set(listed) - expected)}"
    )


def test_the_openapi_document_lists_them_for_the_filter():
    parameter = DOCUMENT["components"]["parameters"]["outcome"]
    assert parameter["schema"]["enum"] == list(REQUEST_OUTCOMES)


def test_the_docs_say_each_of_them():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    section = docs[docs.index("Outcome codes") : docs.index("An embedding's tokens")]
    assert set(re.findall(r"`([a-z_]+)`", section)) == set(REQUEST_OUTCOMES)
