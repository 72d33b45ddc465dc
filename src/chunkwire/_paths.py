"""The one canonical form of a request path, shared by the gateway and plugins.

``/plugins/{id}/{rest}``: the raw (still percent-encoded) path is split on
``/`` first, then each segment is percent-decoded on its own. A segment that
decodes to ``.`` or ``..``, or that holds an encoded ``/`` (``%2F``) or NUL,
is refused: either would let the decoded path the plugin routes on differ
from the path the gateway routed on (``/plugins/a%2f..%2fb/x``). Because no
segment may decode to a ``/``, the decoded path equals the ASGI scope's
``path``, so a gateway ``authenticate`` hook that reads ``scope["path"]``
sees exactly what the plugin's routes match.

A plugin routes on ``request_uri`` (the target relative to the plugin, as
the gateway received it, never rebuilt from the client's Host header).
"""

from __future__ import annotations

from urllib.parse import unquote

PLUGINS_PREFIX = "plugins"


class BadPath(ValueError):
    """A request path that has no single meaning (400)."""


def decode_path(raw: str) -> str:
    """Percent-decode ``raw`` segment by segment; BadPath for ambiguous segments."""
    if "%" not in raw and "/." not in raw and raw[:1] != "." and "\x00" not in raw:
        return raw  # nothing to decode, no dot segment: the common case
    segments = raw.split("/")
    for index, segment in enumerate(segments):
        decoded = unquote(segment) if "%" in segment else segment
        if decoded in (".", ".."):
            raise BadPath(f"dot segment {segment!r} in the path")
        if "/" in decoded or "\x00" in decoded:
            raise BadPath(f"encoded '/' or NUL in path segment {segment!r}")
        segments[index] = decoded
    return "/".join(segments)


def split_target(target: str) -> tuple[str, str]:
    """``/a/b?x=1`` -> (``/a/b``, ``x=1``): a plain split, no URL parsing.

    ``urlsplit`` would read ``//host/x`` as a network location; a request
    target relative to the plugin never has one.
    """
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    return path or "/", query


def route_plugin(raw_path: str) -> tuple[str, str, str] | None:
    """``/plugins/{id}/{rest}`` -> (id, raw ``/{rest}``, decoded ``/{rest}``).

    None when the path is not under ``/plugins/{id}``; BadPath when a
    segment is ambiguous (see the module docstring).
    """
    parts = raw_path.split("/", 3)
    if len(parts) < 3 or parts[0] or parts[1] != PLUGINS_PREFIX or not parts[2]:
        return None
    plugin_id = decode_path(parts[2])
    raw_rest = "/" + (parts[3] if len(parts) > 3 else "")
    return plugin_id, raw_rest, decode_path(raw_rest)
