"""The load generator's HTTP/1.1 connection: keep-alive, Content-Length and chunked bodies, Connection: close."""

from __future__ import annotations

import asyncio

from bench.load import Connection

RESPONSES = [
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": [1]}\n',
    b"HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4\r\n{"e"\r\n3;x=1\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
]


async def exchange() -> tuple[list[tuple[int, bytes]], list[bytes], int]:
    bodies: list[bytes] = []
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while line := await reader.readline():
            length = 0
            while line not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                line = await reader.readline()
            bodies.append(await reader.readexactly(length))
            writer.write(RESPONSES[len(bodies) - 1])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection(f"http://127.0.0.1:{port}")
    got = [await connection.post("/score", f'{{"n": {i}}}'.encode()) for i in range(3)]
    assert connection.writer is None  # closed after the server said Connection: close
    server.close()
    return got, bodies, accepted


def test_connection_reads_length_chunked_and_close() -> None:
    got, bodies, accepted = asyncio.run(exchange())
    assert got == [(200, b'{"a": [1]}\n'), (422, b'{"e": 1}'), (200, b"ok")]
    assert bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert accepted == 1  # one keep-alive connection for all three


def test_connection_counts_a_close_without_answer_as_status_0_and_reconnects() -> None:
    async def main() -> tuple[list[tuple[int, bytes]], int]:
        accepted = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            await reader.readline()
            if accepted == 1:  # like a keep-alive timeout racing the request: hang up unanswered
                writer.close()
                return
            while await reader.readline() not in (b"\r\n", b""):
                pass
            writer.write(RESPONSES[0])
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        connection = Connection(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        got = [await connection.post("/score", b"") for _ in range(2)]
        await connection.close()
        server.close()
        return got, accepted

    got, accepted = asyncio.run(main())
    assert got == [(0, b""), (200, b'{"a": [1]}\n')] and accepted == 2
