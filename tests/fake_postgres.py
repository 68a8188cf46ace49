"""A tiny stand-in for a PostgreSQL server that refuses every password, speaking the real wire
protocol (v3) on a local port: it declines SSL/GSS encryption, reads the startup packet, asks for a
cleartext password (AuthenticationCleartextPassword, R code 3), reads the password message and
answers a FATAL ErrorResponse with SQLSTATE 28P01, as a server with password authentication does
for a wrong password. Each password it was sent is kept in `passwords` (tests check it really was).
"""
from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

ENCRYPTION_REQUESTS = {80877103, 80877104}   # SSLRequest, GSSENCRequest: answered 'N' (not supported)


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


def error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(code + text.encode() + b"\0" for code, text in
                      ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class WrongPasswordServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.passwords: list[str] = []
        self.users: list[str] = []
        self._thread = threading.Thread(target=self._serve, name="fake-postgres", daemon=True)

    def __enter__(self) -> "WrongPasswordServer":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:   # closed: the test is over
                return
            with conn:
                conn.settimeout(10)
                try:
                    self._session(conn)
                except (ConnectionError, OSError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!II", _read_exact(conn, 8))
            if code in ENCRYPTION_REQUESTS:
                conn.sendall(b"N")
                continue
            params = _read_exact(conn, length - 8).split(b"\0")
            pairs = dict(zip(params[0::2], params[1::2]))
            self.users.append(pairs.get(b"user", b"").decode())
            break
        conn.sendall(b"R" + struct.pack("!II", 8, 3))          # AuthenticationCleartextPassword
        kind, length = struct.unpack("!cI", _read_exact(conn, 5))
        assert kind == b"p", kind
        self.passwords.append(_read_exact(conn, length - 4).rstrip(b"\0").decode())
        user = self.users[-1]
        conn.sendall(error_response("28P01", f'password authentication failed for user "{user}"'))
