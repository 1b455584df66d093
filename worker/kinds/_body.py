"""Reading a response body against a cap: compressed bodies are inflated piece by piece.

httpx inflates each network read whole before the caller can count it: one ~64 KiB read of a
gzip bomb became ~64 MB, and 8 such requests took a worker from 144 MB to 590 MB. Here no
decoding step yields more than `PIECE` bytes, and reading stops as soon as the cap is passed, so
a body costs at most its cap plus one piece, however well it compresses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from taskcast.worker.kinds._upstream import UpstreamRejectedError

__all__ = ["ACCEPT_ENCODING", "PIECE", "read_capped"]

#: The most one decoding step may produce (the size of one network read).
PIECE = 64 * 1024
#: What requests ask for by default: only the encodings inflated here against the cap.
ACCEPT_ENCODING = "gzip, deflate"
#: More stacked encodings than this are left as sent: no real server nests them deeper.
MAX_LAYERS = 3


class _Zlib:
    """One gzip or deflate layer, inflated at most `PIECE` bytes at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._z: Any = None
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The bytes `data` decodes to, in pieces of at most `PIECE`."""
        if self._z is None:
            self._head += data
            if len(self._head) < 2:  # deflate's two header bytes tell zlib from raw deflate
                return
            data, self._head = self._head, b""
            self._z = zlib.decompressobj(self._wbits(data))
        try:
            out = self._z.decompress(data, PIECE)
            yield out
            while self._z.unconsumed_tail or len(out) == PIECE:
                out = self._z.decompress(self._z.unconsumed_tail, PIECE)
                yield out
        except zlib.error as exc:
            raise UpstreamRejectedError(
                f"the response body is not valid {self.encoding}: {exc}"
            ) from None

    def end(self) -> Iterator[bytes]:
        """Whatever the last input still holds (nothing, for a complete stream)."""
        if self._head:
            raise UpstreamRejectedError(f"the response body is not valid {self.encoding}")
        if self._z is not None:
            yield self._z.flush()
            if not self._z.eof:
                raise UpstreamRejectedError(
                    f"the response body is not valid {self.encoding}: cut short"
                )

    def _wbits(self, head: bytes) -> int:
        if self.encoding != "deflate":
            return 16 + zlib.MAX_WBITS  # gzip header and trailer
        # "deflate" is meant to be zlib-wrapped (RFC 9110), but some servers send it raw.
        wrapped = head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


class _Chain:
    """The layers of a Content-Encoding, undone in reverse order; none is identity."""

    def __init__(self, layers: Sequence[_Zlib]) -> None:
        self.layers = layers

    def feed(self, data: bytes, i: int = 0) -> Iterator[bytes]:
        """`data` through layers `i`... (each piece bounded, so nothing inflates whole)."""
        if i == len(self.layers):
            yield data
            return
        for piece in self.layers[i].feed(data):
            yield from self.feed(piece, i + 1)

    def end(self, i: int = 0) -> Iterator[bytes]:
        """Flush layers `i`... in order, passing what each still holds to the next."""
        if i < len(self.layers):
            for piece in self.layers[i].end():
                yield from self.feed(piece, i + 1)
            yield from self.end(i + 1)


def _chain(content_encoding: str) -> _Chain:
    """Decoders for `content_encoding`; an encoding not decoded here leaves the body as sent."""
    names = [n.strip().lower() for n in content_encoding.split(",")]
    names = [n for n in names if n not in ("", "identity")]
    known = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
    if len(names) > MAX_LAYERS or any(n not in known for n in names):
        return _Chain([])
    return _Chain([_Zlib(known[n]) for n in reversed(names)])


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """The decoded body cut at `cap` bytes, and whether it was cut; stops reading at the cap."""
    chain = _chain(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for raw in response.aiter_raw():
        for piece in chain.feed(raw):
            body += piece
            if len(body) > cap:
                return bytes(body[:cap]), True
    for piece in chain.end():
        body += piece
        if len(body) > cap:
            return bytes(body[:cap]), True
    return bytes(body), False
