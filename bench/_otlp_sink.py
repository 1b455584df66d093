"""A silent OTLP/gRPC trace receiver on loopback: accepts every export and keeps nothing.

`python -m bench._otlp_sink --port P` answers `TraceService/Export` with an empty (successful)
response, so exporters run their full path (batching, encoding, a real gRPC call) and the
benchmark measures what tracing costs the traced processes, not a collector.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def _export(request: bytes, context: Any) -> bytes:
    return b""  # an empty ExportTraceServiceResponse: everything accepted


class _Sink(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    def service(self, details: Any) -> Any:
        if details.method == EXPORT:
            return grpc.unary_unary_rpc_method_handler(_export)
        return None


async def serve(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Sink(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    asyncio.run(serve(p.parse_args().port))


if __name__ == "__main__":
    main()
