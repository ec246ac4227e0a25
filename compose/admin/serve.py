"""Runs the admin API and web pages (uvicorn) on each address in MAILSTACK_LISTEN: one on a
single host (its frontend address), on a cluster its own address on each link
(docs/cluster.md). X-Forwarded-For is believed only from MAILSTACK_TRUSTED_PROXY."""

from __future__ import annotations

import os
import socket

import uvicorn

PORT = 8080


def listening_socket(address: str) -> socket.socket:
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound.bind((address, PORT))
    return bound


def main() -> None:
    addresses = os.environ["MAILSTACK_LISTEN"].split()
    config = uvicorn.Config(
        "adminapi:app",
        host=addresses[0],  # for its log line; the sockets below are what it serves
        port=PORT,
        proxy_headers=True,
        forwarded_allow_ips=os.environ["MAILSTACK_TRUSTED_PROXY"],
        server_header=False,
        log_level="info",
    )
    uvicorn.Server(config).run(sockets=[listening_socket(address) for address in addresses])


if __name__ == "__main__":
    main()
