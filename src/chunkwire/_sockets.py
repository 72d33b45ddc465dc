"""Unix sockets for gRPC servers: created 0600, stale ones replaced, our own removed."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

import grpc


def _socket_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _prepare_unix_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    if _socket_in_use(path):
        raise OSError(f"unix:{path} is in use: another process is listening on it")
    os.unlink(path)  # stale socket from a process that did not clean up


def add_private_unix_port(server: grpc.aio.Server, path: str) -> tuple[int, int]:
    """Listen on ``path`` (absolute), mode 0600; returns the socket's (st_dev, st_ino)."""
    _prepare_unix_path(path)
    # Created 0600 from the start: no window where others can connect.
    old_umask = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix:{path}")
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def listen_private_unix(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening unix stream socket at ``path`` (absolute), mode 0600, and its (dev, ino)."""
    _prepare_unix_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        st = os.stat(path)
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


def remove_unix_socket(path: str, ino: tuple[int, int] | None) -> None:
    """Remove ``path`` if it is still the socket we created (not a successor's)."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ino:
            os.unlink(path)
