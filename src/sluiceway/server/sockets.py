"""Binding the listening sockets: TCP (IPv4/IPv6), a Unix socket, an inherited fd, or systemd's.

``bind_sockets(config)`` returns bound sockets (``listen()`` is left to
whoever serves them: ``loop.create_server`` in a ``Server``, the supervisor
before it starts workers). Every failure is a ``ConfigError`` with one line
saying what could not be bound and why (the CLI exits 2 with it).
``describe_socket`` is the address a client would use, for the log.

Socket activation comes first: when systemd passed sockets to this process
(``LISTEN_FDS``, ``server/systemd.py``), they are served and ``--host``,
``--port``, ``--uds`` and ``--fd`` are ignored, as gunicorn does (the unit's
``.socket`` file is then where the addresses are configured).
``removable_path`` says whether a Unix socket's file is ours to unlink at
exit: never one systemd bound (it may pass it again on the next start).

Used by ``server/runner.py`` and ``server/supervisor.py``. Imports only the
standard library, ``sluiceway.config``, ``sluiceway.errors`` and
``sluiceway.server.systemd``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.server.systemd import activation_name, listen_sockets

# Unix socket mode: owner and group may connect. A proxy running as another
# user joins the socket's group (uvicorn uses 0o666: anyone on the host).
UDS_MODE = 0o660


def bind_sockets(config: Config) -> list[socket.socket]:
    """Create and bind the listening sockets (``listen()`` happens when serving starts).

    Raises:
        ConfigError: one line saying what could not be bound and why.
    """
    activated = listen_sockets()
    if activated:
        return activated
    if config.fd is not None:
        return [_socket_from_fd(config.fd)]
    if config.uds is not None:
        return [_bind_unix(config.uds)]
    return _bind_tcp(config.host, config.port)


def _socket_from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"--fd {fd}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(f"--fd {fd}: not a stream socket")
    return sock


def _bind_unix(path: str) -> socket.socket:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot use Unix socket {path!r}: {exc.strerror}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"cannot use Unix socket {path!r}: a file that is not a socket")
        if _unix_socket_alive(path):
            raise ConfigError(f"cannot use Unix socket {path!r}: another server listens on it")
        os.unlink(path)  # stale, left by a server that did not clean up
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, UDS_MODE)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind Unix socket {path!r}: {exc.strerror or exc}") from None
    return sock


def _unix_socket_alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def _bind_tcp(host: str, port: int) -> list[socket.socket]:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    seen = set()
    sockets: list[socket.socket] = []
    bound_port = port
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does: no v4-mapped surprises.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # With port 0 and several addresses (localhost: 127.0.0.1 and ::1)
            # every socket takes the port the first one was given.
            host_text = str(address[0])
            target = (host_text, bound_port, *address[2:])
            try:
                sock.bind(target)
            except OSError as exc:
                raise ConfigError(_bind_error(host_text, bound_port, exc)) from None
            bound_port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_error(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: address already in use"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def removable_path(config: Config, sockets: list[socket.socket]) -> str | None:
    """``--uds``'s path, to unlink at exit, unless ``sockets`` came from systemd (its file)."""
    if config.uds is None or any(activation_name(sock) is not None for sock in sockets):
        return None
    return config.uds


def describe_socket(sock: socket.socket, scheme: str, config: Config) -> str:
    """The address a client would use, e.g. ``http://127.0.0.1:8000`` or ``unix:/run/app.sock``."""
    if sock.family == socket.AF_UNIX:
        where = f"unix:{sock.getsockname() or config.uds}"
    else:
        host, port = sock.getsockname()[:2]
        where = (
            f"{scheme}://[{host}]:{port}"
            if sock.family == socket.AF_INET6
            else (f"{scheme}://{host}:{port}")
        )
    name = activation_name(sock)
    if name is not None:
        where += f" (systemd: {name})"
    elif config.fd is not None:
        where += f" (fd {config.fd})"
    return where
