"""Request ids: unique across processes without coordination, and sortable by time; the
`requests.skips` column reads back as the skips it was made of."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from chain429.requestlog.records import AttemptRecord, SkipEncoder, decode_skips, new_request_id

ID = re.compile(r"^req_[0-9a-f]{26}$")


def test_ids_are_unique_shaped_and_ordered_by_time():
    ids = [new_request_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(ID.match(i) for i in ids)
    time.sleep(0.002)
    later = new_request_id()
    assert later[:16] > ids[0][:16]  # the millisecond prefix sorts by time
    assert abs(int(later[4:16], 16) - time.time() * 1000) < 60_000  # and is the time


def test_two_processes_never_share_an_id():
    code = "from chain429.requestlog.records import new_request_id as n; print(n()[16:])"
    tags = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(3)
    }
    assert len(tags) == 3  # each process has its own random part


def test_a_forked_child_draws_its_own_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child[16:24] != new_request_id()[16:24]


def test_the_skips_column_reads_back_as_the_trails_skips_and_only_them():
    encode = SkipEncoder(size=2)  # two distinct skips remembered: the third evicts
    trails = [
        [
            AttemptRecord(1, "groq", "llama", "skip:limited", reason='quota "day" \\ gone'),
            AttemptRecord(2, "mistral", "small", "429", 429, 80.0, 60000, "rate limited"),
            AttemptRecord(3, "cerebras", "llama", "skip:cooldown", reason="cooling down"),
            AttemptRecord(4, "paid", "gpt", "skip:budget", reason="$0.00 left of $1.00"),
            AttemptRecord(5, "paid", "gpt-mini", "200", 200, 4.0),
        ],
        [AttemptRecord(1, "groq", "llama", "skip:limited", reason='quota "day" \\ gone')],
        [AttemptRecord(1, "groq", "llama", "200", 200, 3.0)],
    ]
    for trail in trails * 3:
        skips = [a for a in trail if a.outcome.startswith("skip:")]
        column = encode(trail)
        assert decode_skips(column) == skips
        assert (column is None) == (not skips)
