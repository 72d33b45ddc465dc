"""HTTP/1.1 over a raw socket, parsed by h11: exact bytes out, strict parsing in.

A forged response smuggled after a bodiless one, a body shorter or longer
than its Content-Length, an aborted connection: h11 reads the bytes the
way a strict client does, so each shows up as what it is.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11


class Aborted(Exception):
    """The connection ended before the response did; ``body`` is what came."""

    def __init__(self, status: int | None, body: bytes) -> None:
        super().__init__(f"connection ended mid-response (status {status}, {len(body)} body bytes)")
        self.status = status
        self.body = body


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class RawClient:
    """One keep-alive connection; ``request`` sends exact bytes and parses the answer."""

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        split = urlsplit(url)
        self.sock = socket.create_connection((split.hostname, split.port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Answer:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("Host", "t"), *(headers or [])]
        if body or method in ("POST", "PUT"):
            all_headers.append(("Content-Length", str(len(body))))
        out = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        out += self.conn.send(h11.Data(data=body)) if body else b""
        out += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(out)
        return self.read()

    def read(self) -> Answer:
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as error:
                raise Aborted(status, b"".join(parts)) from error
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert status is not None
                return Answer(status, headers, b"".join(parts))
            elif isinstance(event, h11.ConnectionClosed):
                raise Aborted(status, b"".join(parts))


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets, or the timeout passes)."""
    chunks = []
    while True:
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        chunks.append(piece)
    return b"".join(chunks)


def raw_exchange(url: str, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data`` as is, return everything until the server closes (or times out)."""
    split = urlsplit(url)
    with socket.create_connection((split.hostname, split.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    return int(line.split()[1])
