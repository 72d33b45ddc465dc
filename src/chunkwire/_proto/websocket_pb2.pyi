from chunkwire._proto import http_pb2 as _http_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WebSocketInit(_message.Message):
    __slots__ = ("request", "subprotocols", "max_message_size")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SUBPROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    request: _http_pb2.ServeHTTPRequestInit
    subprotocols: _containers.RepeatedScalarFieldContainer[str]
    max_message_size: int
    def __init__(self, request: _Optional[_Union[_http_pb2.ServeHTTPRequestInit, _Mapping]] = ..., subprotocols: _Optional[_Iterable[str]] = ..., max_message_size: _Optional[int] = ...) -> None: ...

class WebSocketAccept(_message.Message):
    __slots__ = ("subprotocol", "headers")
    SUBPROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    subprotocol: str
    headers: _containers.RepeatedCompositeFieldContainer[_http_pb2.HTTPHeader]
    def __init__(self, subprotocol: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[_http_pb2.HTTPHeader, _Mapping]]] = ...) -> None: ...

class WebSocketDeny(_message.Message):
    __slots__ = ("status_code", "headers", "body")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    headers: _containers.RepeatedCompositeFieldContainer[_http_pb2.HTTPHeader]
    body: bytes
    def __init__(self, status_code: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[_http_pb2.HTTPHeader, _Mapping]]] = ..., body: _Optional[bytes] = ...) -> None: ...

class WebSocketData(_message.Message):
    __slots__ = ("payload", "text", "final")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    text: bool
    final: bool
    def __init__(self, payload: _Optional[bytes] = ..., text: _Optional[bool] = ..., final: _Optional[bool] = ...) -> None: ...

class WebSocketClose(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class WebSocketFrame(_message.Message):
    __slots__ = ("init", "accept", "deny", "data", "close")
    INIT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    init: WebSocketInit
    accept: WebSocketAccept
    deny: WebSocketDeny
    data: WebSocketData
    close: WebSocketClose
    def __init__(self, init: _Optional[_Union[WebSocketInit, _Mapping]] = ..., accept: _Optional[_Union[WebSocketAccept, _Mapping]] = ..., deny: _Optional[_Union[WebSocketDeny, _Mapping]] = ..., data: _Optional[_Union[WebSocketData, _Mapping]] = ..., close: _Optional[_Union[WebSocketClose, _Mapping]] = ...) -> None: ...
