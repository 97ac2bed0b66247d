"""dimbybot2: a Discord music bot that plays through a Lavalink v4 server."""

__version__ = "2.0.0"
