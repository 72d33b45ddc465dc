"""How frames travel between gateway and plugin: the multiplexed stream protocol."""

from .._wire import DESCRIBE_METHOD, PLUGIN_SERVICE

CONNECT_METHOD = f"/{PLUGIN_SERVICE}/Connect"
TRANSPORT_CHOICES = ("auto", "lane", "mux", "call")

__all__ = ["CONNECT_METHOD", "DESCRIBE_METHOD", "TRANSPORT_CHOICES"]
