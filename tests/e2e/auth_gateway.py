"""A gateway whose ``authenticate`` forbids the honest plugin's /admin (a real process).

``python auth_gateway.py unix:/honest.sock`` prints "listening on URL" like
the CLI. The rule reads ``scope["path"]``, as a user would write it; the
gateway guarantees it is the path the plugin routes on.
"""

from __future__ import annotations

import sys

from chunkwire.cli import _uvicorn_server
from chunkwire.gateway import Gateway, Reject


def authenticate(scope):
    if scope["path"].startswith("/plugins/honest/admin"):
        raise Reject(403, "Forbidden")
    return None


if __name__ == "__main__":
    gateway = Gateway({"honest": sys.argv[1]}, authenticate=authenticate)
    server = _uvicorn_server(
        gateway, "127.0.0.1", 0, "warning",
        on_started=lambda url: print(f"auth gateway listening on {url}", flush=True),
    )
    server.run()
