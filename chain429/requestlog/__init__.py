"""The request log: every request's record, written off the request path, and read back.

Owns: the record types the request path fills in (`records`), the tables
(`tables`), the connection and numbered migrations (`database`), the bounded
buffer and the writer thread (`buffer`, `writer`), hourly rollups (`rollup`),
stats queries and their parameters (`stats`, `params`), what answers cost
over a range (`spend`), and the limit state
persisted beside the log (`persist`).

May import: `chain429.config` and `chain429.upstream` (time formatting). Never
routing or the server: they hand records over, the log never calls back.
"""
