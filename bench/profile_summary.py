"""Summarize a py-spy collapsed-stack profile (`run.py --py-spy prof.txt`) by area.

    python bench/profile_summary.py /tmp/prof.txt [--top 25]

Each sample is charged to one area: the innermost frame that belongs to a
library we care about (Sanic, httpx, aiohttp, httpcore, h11, anyio, json,
chain429). Generic stdlib frames (re, contextlib, weakref, http.cookiejar,
asyncio, ...) are skipped on the way up, so `re._compile` under httpx's URL
parsing counts as httpx: the question is whose choice caused the cost, not
which file ran it. aiohttp is chain429's upstream client (chain429/upstream/transport.py).
Samples with no such frame are the event loop itself ("loop/other").
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence

# Order matters only for readability of the output; matching is on the file path.
AREAS = (
    ("json", re.compile(r"\(json/")),
    ("chain429", re.compile(r"\(chain429/")),
    ("sanic", re.compile(r"\((sanic|sanic_routing|httptools)/")),
    ("httpx", re.compile(r"\(httpx/")),
    ("aiohttp (chain429's transport pool)", re.compile(r"\((aiohttp|multidict|yarl|propcache)/")),
    ("httpcore", re.compile(r"\(httpcore/")),
    ("h11 (httpcore's parser)", re.compile(r"\(h11/")),
    ("anyio (httpcore's backend)", re.compile(r"\((anyio|sniffio)/")),
)


def area_of(frames: Sequence[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, pattern in AREAS:
            if pattern.search(frame):
                return name
    return "loop/other"


def parse(path: str) -> list[tuple[list[str], int]]:
    samples = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if count.isdigit():
                samples.append((stack.split(";") if stack else [], int(count)))
    return samples


def _short(frame: str) -> str:
    # "func (pkg/mod.py:123)" -> "func (pkg/mod.py)": lines split one function into many rows.
    return re.sub(r":\d+\)$", ")", frame)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    samples = parse(args.path)
    total = sum(count for _, count in samples) or 1
    areas: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in samples:
        areas[area_of(frames)] += count
        if frames:
            own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    print(f"{total} samples\n\nby area (innermost library frame):")
    for name, count in areas.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print(f"\ntop {args.top} by self time:")
    for frame, count in own.most_common(args.top):
        print(f"  {count / total:6.1%}  {frame}")
    print(f"\ntop {args.top} by inclusive time:")
    for frame, count in inclusive.most_common(args.top):
        print(f"  {count / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
