"""A loopback HTTP server that answers every request after a pause (for `bench.slots`).

    python -m bench._slow_http --port PORT --delay 2

One asyncio process; each connection gets one small JSON answer `delay` seconds after its request
arrived, then is closed. The backlog takes a burst of thousands of connections at once.
"""

from __future__ import annotations

import argparse
import asyncio

BODY = b'{"ok": true}'
REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(BODY), BODY)
)


async def serve(port: int, delay: float) -> None:
    """Answer on 127.0.0.1:port until killed."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(REPLY)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client went away: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=2.0, help="seconds before each answer")
    args = p.parse_args()
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
