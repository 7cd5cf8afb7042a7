"""The request log: every request's record, written off the request path, and read back.

Owns: the record types the request path fills in (`records`), the tables
(`tables`), the connection and numbered migrations (`database`), the bounded
buffer and the writer thread (`buffer`, `writer`), hourly rollups (`rollup`),
stats queries and their parameters (`stats`, `params`), the rows themselves
page by page (`listing`), what answers cost over a range (`spend`), and the limit state
persisted beside the log (`persist`).

May import: `chain429.config` and `chain429.upstream` (time formatting). Never
routing or the server: they hand records over, the log never calls back.
"""

import sys


def import_peewee_without_its_postgres_driver() -> None:
    """Import peewee, for a process that owns its imports (`chain429 serve`), without psycopg.

    Peewee imports psycopg at its own import when it can: 13 MB of resident
    memory (libpq and its TLS libraries) in a server that most often logs to
    SQLite. Hidden from that first import, the driver is attached when a
    PostgreSQL URL is opened (`database._attach_psycopg`), so this changes
    nothing but memory. Only the server's entry point calls this: anything else
    in the process that builds its own `peewee.PostgresqlDatabase` would need the
    driver in place. A process that imported peewee already keeps it as it is.
    """
    if "peewee" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # `import psycopg` now fails
    try:
        import peewee  # noqa: F401
    finally:
        del sys.modules["psycopg"]
