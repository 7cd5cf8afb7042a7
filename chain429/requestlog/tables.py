"""The request log's tables (Peewee), bound at run time to SQLite or PostgreSQL.

Models are declared once against a `DatabaseProxy`; `open_database(url)`
binds it. Only the telemetry writer thread writes; stats read from other
threads. Times are stored as epoch milliseconds (integers) so SQLite and
PostgreSQL compare, bucket and index them the same way.
"""

from __future__ import annotations

import peewee

database_proxy = peewee.DatabaseProxy()


def endpoint_field() -> peewee.CharField:
    """The proxied route a row is about: chat, completions, embeddings (migration 5).

    A default in the table too, not only in Python: rows an older version (or a
    backfill) inserts without it were chat, the only route there was.
    """
    return peewee.CharField(
        max_length=16, default="chat", constraints=[peewee.SQL("DEFAULT 'chat'")]
    )


# Upper bounds (ms) of the latency histogram buckets kept in HourlyRollup rows
# (and used by /metrics); a last, open-ended bucket follows the final bound.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    120000,
)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class RequestRow(BaseModel):
    """One client request, however many entries it took."""

    id = peewee.CharField(primary_key=True, max_length=40)
    time_ms = peewee.BigIntegerField(index=True)  # when it arrived, epoch ms
    key_label = peewee.CharField(null=True, max_length=64)
    client = peewee.CharField(null=True, max_length=64)  # a `clients:` name (migration 4)
    chain = peewee.CharField(null=True, max_length=200)
    route = peewee.CharField(null=True, max_length=16)  # why that chain (migration 3)
    endpoint = endpoint_field()
    requested_model = peewee.CharField(null=True, max_length=200)
    provider = peewee.CharField(null=True, max_length=200)  # the entry that answered
    model = peewee.CharField(null=True, max_length=200)
    status = peewee.IntegerField()
    outcome = peewee.CharField(max_length=40)
    stream = peewee.BooleanField(default=False)
    attempts = peewee.IntegerField(default=0)
    latency_ms = peewee.FloatField()
    ttft_ms = peewee.FloatField(null=True)
    queued_ms = peewee.FloatField(default=0.0)
    prompt_tokens = peewee.IntegerField(null=True)
    completion_tokens = peewee.IntegerField(null=True)
    total_tokens = peewee.IntegerField(null=True)
    tokens_estimated = peewee.BooleanField(default=False)
    # Double precision: PostgreSQL's REAL (FloatField) keeps 7 digits, too few for money.
    cost_usd = peewee.DoubleField(null=True)  # US dollars; null when unpriced (migration 6)
    # A default in the table too: a previous release's writer (instances upgraded
    # one by one against one PostgreSQL) inserts rows without this column.
    cost_estimated = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT FALSE")])
    # The trail's skips as JSON (`records.SkipEncoder`); its calls are rows of
    # `attempts`. Null when nothing was skipped, and for rows logged before
    # migration 8, whose skips are rows of `attempts`.
    skips = peewee.TextField(null=True)

    class Meta:
        table_name = "requests"
        indexes = (
            (("chain", "time_ms"), False),
            (("provider", "time_ms"), False),
            (("client", "time_ms"), False),
        )


class AttemptRow(BaseModel):
    """One entry considered for a request: a call, or a skip with its reason."""

    request = peewee.ForeignKeyField(
        RequestRow, backref="trail", column_name="request_id", on_delete="CASCADE"
    )
    order = peewee.IntegerField(column_name="position")
    provider = peewee.CharField(max_length=200)
    model = peewee.CharField(max_length=200)
    outcome = peewee.CharField(max_length=40)  # "200", "429", "timeout", "skip:cooldown"
    status = peewee.IntegerField(null=True)
    latency_ms = peewee.FloatField(null=True)
    cooldown_ms = peewee.BigIntegerField(null=True)
    reason = peewee.TextField(default="")

    class Meta:
        table_name = "attempts"


class HourlyRollup(BaseModel):
    """Per hour, chain, provider, outcome, endpoint and client: what summaries and charts
    read at scale.

    Latency percentiles cannot be summed, so each row keeps a histogram of
    latencies (counts per fixed bucket, as JSON) that merges by addition.
    """

    hour_ms = peewee.BigIntegerField()  # start of the hour, epoch ms
    chain = peewee.CharField(max_length=200, default="")
    provider = peewee.CharField(max_length=200, default="")  # "" when nobody answered
    outcome = peewee.CharField(max_length=40)
    endpoint = endpoint_field()
    client = peewee.CharField(max_length=64, default="")  # "" for anonymous (migration 7)
    requests = peewee.IntegerField(default=0)
    errors = peewee.IntegerField(default=0)
    attempts = peewee.IntegerField(default=0)
    prompt_tokens = peewee.BigIntegerField(default=0)
    completion_tokens = peewee.BigIntegerField(default=0)
    latency_sum_ms = peewee.FloatField(default=0.0)
    # JSON list of len(LATENCY_BUCKETS_MS) + 1 counts: how many latencies fell at
    # or below each bound (not cumulative), the last for everything above.
    latency_histogram = peewee.TextField(default="[]")

    class Meta:
        table_name = "hourly_rollup"
        indexes = ((("hour_ms", "chain", "provider", "outcome", "endpoint", "client"), True),)


class HourlyAttemptRollup(BaseModel):
    """Per hour, provider, model, outcome token and endpoint: the attempt trails, counted.

    The hour is that of the request the attempt belongs to (`requests.time_ms`),
    not of the attempt itself, so a range selects the same trails whether it
    reads this table or joins `attempts` to `requests`.
    """

    hour_ms = peewee.BigIntegerField()  # start of the request's hour, epoch ms
    provider = peewee.CharField(max_length=200)
    model = peewee.CharField(max_length=200)
    outcome = peewee.CharField(max_length=40)  # "200", "429", "timeout", "skip:cooldown"
    endpoint = endpoint_field()  # the request's
    count = peewee.IntegerField(default=0)
    latency_sum_ms = peewee.FloatField(default=0.0)  # skips (no latency) add nothing

    class Meta:
        table_name = "hourly_attempt_rollup"
        indexes = ((("hour_ms", "provider", "model", "outcome", "endpoint"), True),)


class HourlySpendRollup(BaseModel):
    """Per hour, client, chain and provider: what priced answers cost (migration 6).

    Only requests with a cost (`requests.cost_usd` not null) are counted, so a
    30-day spend report reads hours, not requests. `client`, `chain` and
    `provider` are "" where the request had none.
    """

    hour_ms = peewee.BigIntegerField()  # start of the request's hour, epoch ms
    client = peewee.CharField(max_length=64, default="")
    chain = peewee.CharField(max_length=200, default="")
    provider = peewee.CharField(max_length=200, default="")
    requests = peewee.IntegerField(default=0)  # priced requests
    cost_usd = peewee.DoubleField(default=0.0)
    estimated_usd = peewee.DoubleField(default=0.0)  # the part of cost_usd from estimates
    prompt_tokens = peewee.BigIntegerField(default=0)
    completion_tokens = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "hourly_spend_rollup"
        indexes = ((("hour_ms", "client", "chain", "provider"), True),)


class ProviderState(BaseModel):
    """Rate-limit state that must survive a restart (cooldowns); written by the state store."""

    key = peewee.CharField(primary_key=True, max_length=400)
    data = peewee.TextField()
    updated_ms = peewee.BigIntegerField()

    class Meta:
        table_name = "provider_state"


class SchemaMigration(BaseModel):
    number = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_ms = peewee.BigIntegerField()

    class Meta:
        table_name = "schema_migrations"


ALL_MODELS = (
    RequestRow,
    AttemptRow,
    HourlyRollup,
    HourlyAttemptRollup,
    HourlySpendRollup,
    ProviderState,
    SchemaMigration,
)
