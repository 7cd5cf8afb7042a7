"""Prometheus metrics: counted from each finished request record, rendered on scrape.

Each app has its own registry (several apps may share a process in tests and
embeddings). Gauges that describe current state (cooldowns, queue depths) and
the request log writer's counters are read at scrape time rather than kept up
to date on the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from chain429.requestlog.records import INTERRUPTED, RequestRecord
from chain429.requestlog.tables import LATENCY_BUCKETS_MS
from chain429.requestlog.writer import Telemetry
from chain429.routing.known_skips import KnownSkips

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS_BUCKETS = tuple(ms / 1000 for ms in LATENCY_BUCKETS_MS)
_MAX_CHILDREN = 10_000
_MAX_KNOWN_PENDING = 100  # distinct known skips counted lazily between two scrapes


class _StateCollector(Collector):
    """Gauges computed when Prometheus scrapes."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        values = self._read()
        for name, help_text in (
            ("chain429_active_cooldowns", "Entries or providers blocked right now."),
            (
                "chain429_open_breakers",
                "Entries whose circuit breaker is open right now (skipped: `skip:breaker`).",
            ),
            (
                "chain429_paused",
                "Providers and entries paused right now (`chain429 entry pause`; skipped: "
                "`skip:paused`).",
            ),
            ("chain429_open_connections", "Client connections open right now."),
            ("chain429_request_queue_depth", "Requests waiting for a provider to recover."),
            (
                "chain429_config_rejected",
                "1 while the config file on disk is invalid (the last good one serves).",
            ),
            (
                "chain429_state_store_unavailable",
                "1 while the shared state store (Redis) cannot be reached: this instance "
                "serves on its own limits (stateStoreFailure open) or refuses (closed).",
            ),
        ):
            yield GaugeMetricFamily(name, help_text, value=values.get(name, 0.0))


class _BudgetCollector(Collector):
    """What each paid budget has left today, read at scrape time (/v1/admin/budgets)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        left = GaugeMetricFamily(
            "chain429_paid_budget_remaining_usd",
            "US dollars a paid budget has left today (spent and reserved by calls in flight "
            'taken off): client="" is settings.paidBudgetUsdPerDay, else that client\'s own.',
            labels=["client"],
        )
        for client, usd in sorted(self._read().items()):
            left.add_metric([client], usd)
        yield left


class _LogCollector(Collector):
    """The request log writer's counters, read from it at scrape time (the same as /health's)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        t = self._telemetry
        yield GaugeMetricFamily(
            "chain429_log_pending",
            "Request records accepted and not yet committed to the database.",
            value=t.pending,
        )
        dropped = CounterMetricFamily(
            "chain429_log_dropped",
            "Request records that will never be written, by reason: full (the buffer "
            "was full), rejected (the database refused the record), shutdown "
            "(unwritten when a stop gave up on the database).",
            labels=["reason"],
        )
        for reason, count in t.dropped_by_reason.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            "chain429_log_written", "Request records committed to the database.", value=t.written
        )
        yield CounterMetricFamily(
            "chain429_log_write_failures",
            "Database errors the request log writer met (each failed try counts).",
            value=t.failures,
        )


class Metrics:
    def __init__(
        self,
        read_state: Callable[[], dict[str, float]],
        telemetry: Telemetry | None = None,
        read_budgets: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chain429_requests",
            "Client requests by chain, answering provider, outcome, endpoint (chat, "
            "completions, embeddings) and client (a `clients:` name; empty for apiKeys and "
            "keyless requests).",
            ("chain", "provider", "outcome", "endpoint", "client"),
            registry=self.registry,
        )
        self.attempts = Counter(
            "chain429_attempts",
            "Upstream calls by provider, model and result token.",
            ("provider", "model", "outcome"),
            registry=self.registry,
        )
        self.skips = Counter(
            "chain429_skips",
            "Entries skipped without a call, by reason.",
            ("provider", "model", "reason"),
            registry=self.registry,
        )
        self.interrupted = Counter(
            "chain429_streams_interrupted",
            "Streams that ended with an error event after their first token (no entry could "
            "finish the answer), by the entry whose stream died.",
            ("provider", "model"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "chain429_request_latency_seconds",
            "Time from request to the full answer.",
            ("chain",),
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "chain429_time_to_first_token_seconds",
            "Streams: time to the first token sent.",
            ("chain",),
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "chain429_tokens",
            "Tokens by chain, provider and kind (prompt, completion).",
            ("chain", "provider", "kind"),
            registry=self.registry,
        )
        self.spend = Counter(
            "chain429_spend_usd",
            "US dollars answers cost (their tokens at their entry's price), by chain and the "
            "provider that answered; estimated costs included.",
            ("chain", "provider"),
            registry=self.registry,
        )
        self.client_tokens = Counter(
            "chain429_client_tokens",
            "Tokens by client (a `clients:` name) and kind (prompt, completion).",
            ("client", "kind"),
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "chain429_connections_refused",
            "Client connections answered 503 and closed: settings.maxConnections were open.",
            registry=self.registry,
        )
        self.connection_timeouts = Counter(
            "chain429_connection_timeouts",
            "Client connections closed for missing a deadline (headers, body).",
            ("phase",),
            registry=self.registry,
        )
        # Label children by (metric, label values): `labels()` validates and
        # looks them up under a lock on every call; a request needs 3-6 of them.
        self._children: dict[tuple[object, ...], Any] = {}
        # Known skips (chain429.routing.known_skips) taken by requests since the last
        # scrape, by identity: (the skips, how many requests took them). A request
        # adds 1 here instead of a count per skip; a scrape adds them to the counter.
        self._known_taken: dict[int, tuple[KnownSkips, int]] = {}
        self.registry.register(_StateCollector(read_state))
        if telemetry is not None:
            self.registry.register(_LogCollector(telemetry))
        if read_budgets is not None:
            self.registry.register(_BudgetCollector(read_budgets))

    def _child(self, metric: MetricWrapperBase, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > _MAX_CHILDREN:  # label values come from configs
                self._children.clear()
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, record: RequestRecord, known: KnownSkips | None = None) -> None:
        """Count a finished request; `known`: the skips its trail starts with, taken as known."""
        child = self._child
        chain = record.chain or ""
        provider = record.provider or ""
        # Client names come from the config: a bounded set, like chains and providers.
        client = record.client or ""
        child(self.requests, chain, provider, record.outcome, record.endpoint, client).inc()
        child(self.latency, chain).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            child(self.ttft, chain).observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            child(self.tokens, chain, provider, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            child(self.tokens, chain, provider, "completion").inc(record.completion_tokens)
        if record.cost_usd:
            child(self.spend, chain, provider).inc(record.cost_usd)
        if record.client is not None:
            if record.prompt_tokens:
                child(self.client_tokens, client, "prompt").inc(record.prompt_tokens)
            if record.completion_tokens:
                child(self.client_tokens, client, "completion").inc(record.completion_tokens)
        trail = record.trail
        if known is not None:
            taken = self._known_taken.get(id(known))
            self._known_taken[id(known)] = (known, 1 if taken is None else taken[1] + 1)
            if len(self._known_taken) > _MAX_KNOWN_PENDING:
                self._count_known_skips()
            trail = trail[len(known.steps) :]
        for attempt in trail:
            if attempt.outcome.startswith("skip:"):
                child(self.skips, attempt.provider, attempt.model, attempt.outcome[5:]).inc()
            elif attempt.outcome == INTERRUPTED:
                child(self.interrupted, attempt.provider, attempt.model).inc()
            else:
                child(self.attempts, attempt.provider, attempt.model, attempt.outcome).inc()

    def _count_known_skips(self) -> None:
        taken, self._known_taken = self._known_taken, {}
        for known, requests in taken.values():
            for step in known.steps:
                child = self._child(self.skips, step.provider, step.model, step.outcome[5:])
                child.inc(requests)

    def render(self) -> bytes:
        self._count_known_skips()
        return generate_latest(self.registry)
