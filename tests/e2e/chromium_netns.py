#!/usr/bin/env python3
"""Run Debian's Chromium in a network namespace of its own (the webmail tests' browser).

Chromium aborts every request in flight (net::ERR_NETWORK_CHANGED) whenever an address
appears or goes on the host, which Docker does each time a network of any stack is made or
removed. In a namespace of its own the browser sees only its loopback, which never changes,
and reaches nothing but the one port relayed to the host: the stack's published HTTPS port
(MAILSTACK_BROWSER_PORT), through a Unix socket. Nothing else is reachable from the
browser at all. Playwright starts this file as the browser executable and talks to
Chromium over inherited pipes, which no namespace affects. Linux only; needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Relay every connection accepted on listener to a new connection from connect()."""
    while True:
        client, _ = listener.accept()
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _relay_process(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Fork a relay that dies with the browser; the browser keeps none of its sockets."""
    if os.fork() == 0:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        keep = listener.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 4096)
        try:
            _serve(listener, connect)
        finally:
            os._exit(0)
    listener.close()


def main() -> None:
    port = int(os.environ["MAILSTACK_BROWSER_PORT"])
    path = str(Path(tempfile.mkdtemp(prefix="mailstack-browser-")) / "https.sock")

    # On the host side: the Unix socket leads to the published port on the host's loopback.
    host_side = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host_side.bind(path)
    host_side.listen(64)
    _relay_process(host_side, lambda: socket.create_connection(("127.0.0.1", port)))

    if _LIBC.unshare(CLONE_NEWNET) != 0:
        sys.exit(f"chromium_netns: unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    # In the browser's namespace: the same port on its own loopback leads to the Unix socket.
    browser_side = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    browser_side.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    browser_side.bind(("127.0.0.1", port))
    browser_side.listen(64)

    def to_host() -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(path)
        return upstream

    _relay_process(browser_side, to_host)
    os.execv(CHROMIUM, [CHROMIUM, *sys.argv[1:]])  # noqa: S606  # a fixed program


if __name__ == "__main__":
    main()
