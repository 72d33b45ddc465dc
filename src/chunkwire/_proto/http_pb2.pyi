from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HTTPHeader(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, key: _Optional[str] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PluginContext(_message.Message):
    __slots__ = ("session_id", "request_id", "ip_address", "accept_language", "user_agent", "user_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: str
    ip_address: str
    accept_language: str
    user_agent: str
    user_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., ip_address: _Optional[str] = ..., accept_language: _Optional[str] = ..., user_agent: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ServeHTTPRequestInit(_message.Message):
    __slots__ = ("plugin_context", "method", "url", "proto", "proto_major", "proto_minor", "headers", "host", "remote_addr", "request_uri", "content_length")
    PLUGIN_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    PROTO_MAJOR_FIELD_NUMBER: _ClassVar[int]
    PROTO_MINOR_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_URI_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    plugin_context: PluginContext
    method: str
    url: str
    proto: str
    proto_major: int
    proto_minor: int
    headers: _containers.RepeatedCompositeFieldContainer[HTTPHeader]
    host: str
    remote_addr: str
    request_uri: str
    content_length: int
    def __init__(self, plugin_context: _Optional[_Union[PluginContext, _Mapping]] = ..., method: _Optional[str] = ..., url: _Optional[str] = ..., proto: _Optional[str] = ..., proto_major: _Optional[int] = ..., proto_minor: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HTTPHeader, _Mapping]]] = ..., host: _Optional[str] = ..., remote_addr: _Optional[str] = ..., request_uri: _Optional[str] = ..., content_length: _Optional[int] = ...) -> None: ...

class ServeHTTPRequest(_message.Message):
    __slots__ = ("init", "body_chunk", "body_complete")
    INIT_FIELD_NUMBER: _ClassVar[int]
    BODY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    BODY_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    init: ServeHTTPRequestInit
    body_chunk: bytes
    body_complete: bool
    def __init__(self, init: _Optional[_Union[ServeHTTPRequestInit, _Mapping]] = ..., body_chunk: _Optional[bytes] = ..., body_complete: _Optional[bool] = ...) -> None: ...

class ServeHTTPResponseInit(_message.Message):
    __slots__ = ("status_code", "headers")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    headers: _containers.RepeatedCompositeFieldContainer[HTTPHeader]
    def __init__(self, status_code: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HTTPHeader, _Mapping]]] = ...) -> None: ...

class ServeHTTPResponse(_message.Message):
    __slots__ = ("init", "body_chunk", "body_complete", "flush")
    INIT_FIELD_NUMBER: _ClassVar[int]
    BODY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    BODY_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    init: ServeHTTPResponseInit
    body_chunk: bytes
    body_complete: bool
    flush: bool
    def __init__(self, init: _Optional[_Union[ServeHTTPResponseInit, _Mapping]] = ..., body_chunk: _Optional[bytes] = ..., body_complete: _Optional[bool] = ..., flush: _Optional[bool] = ...) -> None: ...
