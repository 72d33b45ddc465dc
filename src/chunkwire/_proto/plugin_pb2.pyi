from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_KIND_UNSPECIFIED: _ClassVar[FrameKind]
    FRAME_KIND_OPEN: _ClassVar[FrameKind]
    FRAME_KIND_DATA: _ClassVar[FrameKind]
    FRAME_KIND_WINDOW: _ClassVar[FrameKind]
    FRAME_KIND_RESET: _ClassVar[FrameKind]
    FRAME_KIND_CONTINUE: _ClassVar[FrameKind]
    FRAME_KIND_DELIVERED: _ClassVar[FrameKind]
    FRAME_KIND_PING: _ClassVar[FrameKind]
    FRAME_KIND_PONG: _ClassVar[FrameKind]
    FRAME_KIND_GOAWAY: _ClassVar[FrameKind]
    FRAME_KIND_RING: _ClassVar[FrameKind]
    FRAME_KIND_RING_CREDIT: _ClassVar[FrameKind]
FRAME_KIND_UNSPECIFIED: FrameKind
FRAME_KIND_OPEN: FrameKind
FRAME_KIND_DATA: FrameKind
FRAME_KIND_WINDOW: FrameKind
FRAME_KIND_RESET: FrameKind
FRAME_KIND_CONTINUE: FrameKind
FRAME_KIND_DELIVERED: FrameKind
FRAME_KIND_PING: FrameKind
FRAME_KIND_PONG: FrameKind
FRAME_KIND_GOAWAY: FrameKind
FRAME_KIND_RING: FrameKind
FRAME_KIND_RING_CREDIT: FrameKind

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "version", "transports", "max_chunk_size", "max_init_size", "max_header_count", "chunk_size", "lane_socket", "mux_streams")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSPORTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_INIT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_HEADER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LANE_SOCKET_FIELD_NUMBER: _ClassVar[int]
    MUX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    transports: _containers.RepeatedScalarFieldContainer[str]
    max_chunk_size: int
    max_init_size: int
    max_header_count: int
    chunk_size: int
    lane_socket: str
    mux_streams: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., transports: _Optional[_Iterable[str]] = ..., max_chunk_size: _Optional[int] = ..., max_init_size: _Optional[int] = ..., max_header_count: _Optional[int] = ..., chunk_size: _Optional[int] = ..., lane_socket: _Optional[str] = ..., mux_streams: _Optional[_Iterable[str]] = ...) -> None: ...

class MuxFrame(_message.Message):
    __slots__ = ("stream_id", "kind", "value", "payload")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    kind: FrameKind
    value: int
    payload: bytes
    def __init__(self, stream_id: _Optional[int] = ..., kind: _Optional[_Union[FrameKind, str]] = ..., value: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class MuxBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[MuxFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[MuxFrame, _Mapping]]] = ...) -> None: ...
