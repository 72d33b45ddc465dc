"""A Gateway with authentication and tenant hooks, under uvicorn on a free port.

Clients send ``Authorization: Bearer USER@TENANT``. Topics are
``TENANT.NAME``: a user may read its tenant's topics (``authorize_topic``
True), another tenant's is 403 (False), ``TENANT.hidden...`` is 404 (None).
``expand_topic`` lists ``TOPIC.step1``, ``TOPIC.step2`` and, to check the
gateway filters it, another tenant's topic. ``--events-tls CERT KEY`` serves
the Events service over TLS.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import grpc
import uvicorn

from chunkwire.gateway import Gateway, Identity, Reject


def authenticate(scope):
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value.decode().removeprefix("Bearer ")
            if token == "banned":
                raise Reject(403, "Banned")
            user, _, tenant = token.partition("@")
            return Identity(user_id=user, context={"session_id": tenant})
    return None


async def authorize_topic(identity, topic):
    tenant = identity.context["session_id"]
    owner, _, rest = topic.partition(".")
    if rest.startswith("hidden"):
        return None
    return owner == tenant


def expand_topic(identity, topic):
    return [f"{topic}.step1", f"{topic}.step2", "other.secret"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--events-listen", required=True)
    parser.add_argument("--sse-keepalive", type=float, default=15.0)
    parser.add_argument("--sse-timeout", type=float, default=300.0)
    parser.add_argument("--events-tls", nargs=2, metavar=("CERT", "KEY"),
                        help="PEM files: serve the Events service over TLS")
    ns = parser.parse_args()
    credentials = None
    if ns.events_tls:
        cert, key = (Path(path).read_bytes() for path in ns.events_tls)
        credentials = grpc.ssl_server_credentials([(key, cert)])
    app = Gateway(
        {"p": ns.plugin},
        authenticate=authenticate,
        authorize_topic=authorize_topic,
        expand_topic=expand_topic,
        events_listen=ns.events_listen,
        events_credentials=credentials,
        sse_keepalive=ns.sse_keepalive,
        sse_timeout=ns.sse_timeout,
        stats_path="/_gw/stats",
        metrics_path="/metrics",
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
