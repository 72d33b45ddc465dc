"""ASGI message shapes the gateway reads and writes (HTTP, lifespan, WebSocket close)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:  # only in annotations, which stay strings at runtime
    from typing_extensions import NotRequired

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# ``scope["extensions"][WATCH_CLIENT]``, from chunkwire's own HTTP server: a
# function taking a callback that the server calls, once, if the client's
# connection is lost before the response is complete. Without it the gateway
# learns of a lost client from ASGI ``receive()``, which takes a task per
# request.
WATCH_CLIENT = "chunkwire.watch_client"
WatchClient = Callable[[Callable[[], None]], None]

# ``http.response.start`` key (True): the app sends the first body message
# before it next yields to the event loop. chunkwire's own HTTP server then
# keeps the head for that body's write instead of scheduling a write of its
# own at the end of the loop turn; other servers ignore the key.
BODY_FOLLOWS = "chunkwire.body_follows"

# ``http.response.start`` key (True): the gateway has checked these headers
# (response_head.py: lowercase token names, valid values, no
# Transfer-Encoding), so chunkwire's own HTTP server writes them without
# searching each again; other servers ignore the key.
CHECKED_HEAD = "chunkwire.checked_head"


class HTTPScope(TypedDict):
    type: Literal["http"]
    asgi: dict[str, str]
    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: NotRequired[bytes]
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    state: NotRequired[dict[str, Any]]


class HTTPRequestEvent(TypedDict):
    type: Literal["http.request"]
    body: bytes
    more_body: bool


class HTTPDisconnectEvent(TypedDict):
    type: Literal["http.disconnect"]


class HTTPResponseStartEvent(TypedDict):
    type: Literal["http.response.start"]
    status: int
    headers: Iterable[tuple[bytes, bytes]]
    trailers: NotRequired[bool]


class HTTPResponseBodyEvent(TypedDict):
    type: Literal["http.response.body"]
    body: bytes | memoryview
    more_body: bool


class WebSocketCloseEvent(TypedDict):
    type: Literal["websocket.close"]
    code: int
    reason: NotRequired[str | None]


class LifespanStartupCompleteEvent(TypedDict):
    type: Literal["lifespan.startup.complete"]


class LifespanShutdownCompleteEvent(TypedDict):
    type: Literal["lifespan.shutdown.complete"]
