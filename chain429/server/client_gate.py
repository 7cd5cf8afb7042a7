"""A client's own gate: the chains it may use, and its own limits, before any provider.

A request sent with a client key (`clients:`) passes here after its body is
read and its chain picked, and before the router touches any entry:

- a chain outside the client's `chains` is a 403 `model_not_allowed` (what
  OpenAI answers a project restricted from a model, with a code that says
  why), naming the chains it may use;
- over one of its own limits (`requestsPerMinute`, `tokensPerMinute`,
  `requestsPerDay`, `tokensPerDay`), it is a 429 `client_rate_limited`
  (`rate_limit_error`) whose message names the limit and whose
  `Retry-After` / `retry-after-ms` say when that limit lets the next request
  through. It is the client's own answer, not the chain's: the upstream
  503 `all_providers_exhausted` means the providers are out; this means the
  caller should slow down. No entry is reserved, no provider asked.

The limits are counted in the state store (memory, or Redis for every
instance at once): a request takes its unit and its estimated tokens on
admission; when it is over, `settle` swaps the estimate for the tokens the
provider reported (nothing, when no provider answered). Queue mode does not
apply: a request over its client's own limit is refused at once, since
waiting would only hide from the caller that it is the one going too fast.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from chain429.requestlog.records import RequestRecord
from chain429.routing.limits import Block, ClientReservation, StateStore
from chain429.routing.router import retry_advice
from chain429.routing.runtime import ChainRuntime, ClientRuntime, Snapshot
from chain429.server.errors import ApiError

__all__ = ["CLIENT_HEADER", "Admission", "admit", "settle"]

CLIENT_HEADER = "X-429chain-Client"


@dataclass(slots=True)
class Admission:
    """What one request holds against its client's limits until it is over."""

    held: list[ClientReservation] = field(default_factory=list)


def _refuse_chain(
    client: ClientRuntime, chain: ChainRuntime, route: str, model: object
) -> ApiError:
    allowed = ", ".join(sorted(client.chains or ())) or "none"
    if route == "default":
        what = f"the model {model!r} goes to the default chain '{chain.name}', which it may not use"
    elif route == "model":
        what = f"the model '{chain.name}' is served by entries outside its chains"
    elif route == "alias":
        what = f"the alias {model!r} names the chain '{chain.name}', which it may not use"
    else:
        what = f"it may not use the chain '{chain.name}'"
    return ApiError(
        403,
        f"Client '{client.name}': {what}; its chains: {allowed}.",
        code="model_not_allowed",
        param="model",
    )


def _over_limit(client: ClientRuntime, block: Block, retry_max_wait_s: float) -> ApiError:
    wait = max(0.0, block.until - time.time())
    headers = retry_advice(block.until, retry_max_wait_s)
    # The exact wait, whether or not the SDK is invited to retry: a client
    # that plans its own pace reads it.
    headers.setdefault("retry-after-ms", str(math.ceil(wait * 1000)))
    return ApiError(
        429,
        f"Client '{client.name}' is over its own limit: {block.detail}. "
        f"Try again in {max(1, math.ceil(wait))} s. No provider was asked.",
        code="client_rate_limited",
        error_type="rate_limit_error",
        headers=headers,
    )


async def admit(
    state: StateStore,
    snapshot: Snapshot,
    client: ClientRuntime,
    chain: ChainRuntime,
    route: str,
    model: object,
    need_tokens: int,
    admission: Admission,
) -> None:
    """Let the request through to `chain`, counted against the client's limits; or raise the
    403 (not its chain) or the 429 (over its own limit)."""
    if not client.may_use(chain, route):
        raise _refuse_chain(client, chain, route, model)
    taken = await state.reserve_client(client, need_tokens, time.time())
    if isinstance(taken, Block):
        retry_max_wait_s = snapshot.config.settings.client_retry_max_wait_ms / 1000
        raise _over_limit(client, taken, retry_max_wait_s)
    admission.held.append(taken)


async def settle(state: StateStore, admission: Admission, record: RequestRecord) -> None:
    """The request is over: its client's token count becomes what the provider reported,
    nothing when no provider answered, the estimate when an answer had no count."""
    if not admission.held:
        return
    used = record.total_tokens
    if used is None and record.provider is None:
        used = 0
    for reservation in admission.held:
        await state.finish_client(reservation, used)
    admission.held.clear()
