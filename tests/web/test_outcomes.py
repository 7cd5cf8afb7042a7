"""The Requests page's outcome filter offers every outcome the request log can hold.

The server lists no outcome enum (neither in Python nor in its OpenAPI document), so
the page keeps a list of its own (`OUTCOMES` in web/static/js/pages/requests.js). This
test holds that list to the Python code that writes a request's `outcome`: a word added
there and not in the page, or left in the page after the code dropped it, fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import get_args

from chain429.routing import queueing, router, streaming
from chain429.server import auth, client_gate, completions

REQUESTS_JS = Path(__file__).resolve().parents[2] / "web/static/js/pages/requests.js"


def source(module: ModuleType) -> str:
    return Path(inspect.getfile(module)).read_text()


def page_outcomes() -> list[str]:
    block = re.search(r"const OUTCOMES = \[(.*?)\];", REQUESTS_JS.read_text(), re.S)
    assert block, "no OUTCOMES list in requests.js"
    return re.findall(r'"([a-z_]+)"', block.group(1))


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


def test_the_outcome_filter_offers_every_outcome_the_log_can_hold():
    listed = page_outcomes()
    assert len(listed) == len(set(listed)), "an outcome listed twice"
    expected = logged_outcomes()
    # What the reading found, so a change in the code's shape cannot empty the check.
    assert {"success", "client_error", "all_providers_exhausted", "queue_full"} <= expected
    assert {"client_rate_limited", "model_not_allowed", "wrong_endpoint"} <= expected
    assert set(listed) == expected, (
        f"missing in the page: {sorted(expected - set(listed))}; "
        f"not logged by the server: {sorted(set(listed) - expected)}"
    )
