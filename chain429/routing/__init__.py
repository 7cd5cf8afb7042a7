"""The waterfall: which entry answers a request, and what each answer teaches.

Owns: the runtime snapshot of a config (`runtime`), the walk down a chain
and the reply it makes (`router`), the attempt trail it writes (`trace`),
one entry asked once and the quota bookkeeping around it (`attempts`),
streams up to and past their commit point (`streaming`), what differs
between the proxied routes (`endpoints`), the pure classification of an
upstream answer (`outcome`), the token estimate (`tokens`), rate-limit state behind the
`StateStore` protocol (`limits`; in memory: `memory_store`, `buckets`; shared
on Redis: `redis_*`; a person's pauses: `pauses`), paid budgets held against
estimates and settled with costs (`budget`), queueing for a recovery
(`queueing`) and chain tests (`probe`).

May import: `chain429.upstream`, `chain429.config`, and the record types of
`chain429.requestlog.records`. Never the server: routing knows no HTTP
framework.
"""
