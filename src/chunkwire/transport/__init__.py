"""How frames travel between gateway and plugin: the multiplexed stream protocol."""
