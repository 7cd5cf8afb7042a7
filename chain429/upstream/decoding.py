"""Undoing a provider's Content-Encoding a step at a time, never all at once.

httpx (and aiohttp) inflate a compressed body as fast as it arrives, with no
ceiling: a 1 MB gzip that inflates to 1 GiB costs 1 GiB (measured: 2.3 GB of
memory for one request). `Inflater` hands out at most `STEP` bytes per call
and keeps the rest of its input compressed (zlib's `unconsumed_tail`) until
asked for more, so whoever reads it can stop at a limit having held only that
limit plus one step.

gzip and deflate are decoded (what chain429 asks for); a body in any other
encoding (br, zstd, stacked ones) is handed on as it came, as httpx does, and
is then refused as a malformed answer by whoever parses it.
"""

from __future__ import annotations

import zlib

# Bytes of output per call: big enough that inflating costs little per byte,
# small enough that a bomb's first step is harmless.
STEP = 256 * 1024


class DecodeError(ValueError):
    """The body is not valid data in the encoding its headers name."""


class Inflater:
    """One gzip or deflate body, inflated incrementally; see the module docstring."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip's header (16 +); deflate should be zlib-wrapped, but some servers
        # send it raw: the first chunk decides (see `feed`).
        self._wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(self._wbits)
        self._started = False
        self._full = False  # the last call filled its STEP: zlib may hold more output

    @property
    def pending(self) -> bool:
        """Whether input already fed has more output to give (call `more`)."""
        return self._full or bool(self._zlib.unconsumed_tail)

    def feed(self, data: bytes) -> bytes:
        """Up to STEP bytes of output for `data`; the rest waits for `more()`."""
        if self._zlib.eof:
            return b""  # after the end of the compressed data: trailing junk, ignored
        try:
            out = self._zlib.decompress(data, STEP)
        except zlib.error as exc:
            if self._started or self.encoding != "deflate":
                raise DecodeError(f"invalid {self.encoding} data: {exc}") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
            return self.feed(data)
        self._started = True
        self._full = len(out) == STEP
        return out

    def more(self) -> bytes:
        """Up to STEP more bytes from input already fed."""
        try:
            out = self._zlib.decompress(self._zlib.unconsumed_tail, STEP)
        except zlib.error as exc:
            raise DecodeError(f"invalid {self.encoding} data: {exc}") from None
        self._full = len(out) == STEP
        return out


def inflater_for(content_encoding: str | None) -> Inflater | None:
    """An Inflater for a gzip or deflate body; None for identity and anything else."""
    if not content_encoding:
        return None
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) != 1:
        return None
    coding = "gzip" if codings[0] == "x-gzip" else codings[0]
    return Inflater(coding) if coding in ("gzip", "deflate") else None
