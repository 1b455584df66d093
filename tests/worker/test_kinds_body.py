"""How `http.request` inflates a compressed body: in bounded pieces, stopping at the cap."""

from __future__ import annotations

import asyncio
import zlib

import httpx
import pytest

from taskcast.worker.kinds._body import PIECE, _chain, read_capped
from taskcast.worker.kinds._upstream import UpstreamRejectedError


def compress(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


GZIP, ZLIB, RAW = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
TEXT = bytes(range(256)) * 1000


def decode(encoding: str, body: bytes, step: int) -> tuple[bytes, int]:
    """`body` fed `step` bytes at a time; what came out and its largest piece."""
    chain, out, largest = _chain(encoding), bytearray(), 0
    for i in range(0, len(body), step):
        for piece in chain.feed(body[i : i + step]):
            out += piece
            largest = max(largest, len(piece))
    for piece in chain.end():
        out += piece
    return bytes(out), largest


@pytest.mark.parametrize("step", [1, 7, 65536])
@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", compress(TEXT, GZIP)),
        ("deflate", compress(TEXT, ZLIB)),
        ("deflate", compress(TEXT, RAW)),  # what some servers send as "deflate"
        ("gzip, deflate", compress(compress(TEXT, GZIP), ZLIB)),  # applied in that order
        ("identity", TEXT),
    ],
)
def test_every_encoding_decodes_whole_in_bounded_pieces(
    encoding: str, body: bytes, step: int
) -> None:
    out, largest = decode(encoding, body, step)
    assert out == TEXT and largest <= max(PIECE, step)


def test_an_unknown_or_too_deep_encoding_is_left_as_sent() -> None:
    assert decode("br", b"\x01\x02", 1)[0] == b"\x01\x02"
    assert decode("gzip, gzip, gzip, gzip", b"abc", 1)[0] == b"abc"


def test_a_bomb_stops_at_the_cap_after_one_read() -> None:
    bomb = compress(b"\0" * (64 << 20), GZIP)  # 64 MiB in about 64 KB
    response = httpx.Response(
        200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(bomb)
    )
    data, truncated = asyncio.run(read_capped(response, 10))
    assert truncated and data == b"\0" * 10


def test_a_corrupt_body_is_refused() -> None:
    with pytest.raises(UpstreamRejectedError, match="not valid gzip"):
        decode("gzip", b"not gzip at all", 4)
    with pytest.raises(UpstreamRejectedError, match="cut short"):
        decode("gzip", compress(TEXT, GZIP)[:100], 4)
