"""Event streams: publish over gRPC to a gateway, fan out to Server-Sent Events.

``Publisher`` -> the gateway's ``Events.Publish`` -> a broker
(``InMemoryBroker`` for one gateway, ``NatsBroker`` for several) -> the
gateway's SSE endpoints ``/events/{topic}`` and ``/events/{topic}/consolidated``.
"""

from __future__ import annotations

from ..errors import InvalidEvent, PublishError
from .broker import Broker, BrokerUnavailable, InMemoryBroker
from .fanout import BrokerStats, Subscription
from .model import DEFAULT_MAX_DATA, Event
from .nats_broker import NatsBroker
from .publisher import Publisher

__all__ = [
    "DEFAULT_MAX_DATA",
    "Broker",
    "BrokerStats",
    "BrokerUnavailable",
    "Event",
    "InMemoryBroker",
    "InvalidEvent",
    "NatsBroker",
    "PublishError",
    "Publisher",
    "Subscription",
]
