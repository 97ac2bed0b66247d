"""The bot's settings, read once from the environment and validated.

Kept free of third-party imports so that `--self-check` (also the container's health check)
starts fast and works even if a dependency is broken.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

# A bot token is three base64url segments separated by dots. Checking the shape catches the
# common mistakes (empty, quoted, pasted with "Bot " prefix) without contacting Discord.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    discord_token: str = dataclasses.field(repr=False)
    lavalink_host: str
    lavalink_port: int
    lavalink_password: str = dataclasses.field(repr=False)
    lavalink_secure: bool = False
    guild_id: int | None = None
    default_volume: int = 50

    @property
    def lavalink_uri(self) -> str:
        scheme = "https" if self.lavalink_secure else "http"
        return f"{scheme}://{self.lavalink_host}:{self.lavalink_port}"


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: the process environment); raise ConfigError."""
    env = os.environ if env is None else env
    token = _required(env, "DISCORD_TOKEN")
    if token.lower().startswith("bot "):
        raise ConfigError("DISCORD_TOKEN must be the bare token, without the 'Bot ' prefix")
    if not _TOKEN_SHAPE.match(token):
        raise ConfigError("DISCORD_TOKEN does not look like a Discord bot token")
    host = env.get("LAVALINK_HOST", "").strip() or "lavalink"
    if any(c in host for c in "/:@ "):
        raise ConfigError(f"LAVALINK_HOST must be a host name or address, got {host!r}")
    secure_raw = env.get("LAVALINK_SECURE", "false").strip().lower()
    if secure_raw not in ("true", "false", "1", "0", "yes", "no", ""):
        raise ConfigError(f"LAVALINK_SECURE must be true or false, got {secure_raw!r}")
    guild_raw = env.get("DISCORD_GUILD_ID", "").strip()
    if guild_raw and not guild_raw.isdigit():
        raise ConfigError(f"DISCORD_GUILD_ID must be a numeric id, got {guild_raw!r}")
    return Settings(
        discord_token=token,
        lavalink_host=host,
        lavalink_port=_int(env, "LAVALINK_PORT", 2333, 1, 65535),
        lavalink_password=_required(env, "LAVALINK_PASSWORD"),
        lavalink_secure=secure_raw in ("true", "1", "yes"),
        guild_id=int(guild_raw) if guild_raw else None,
        default_volume=_int(env, "DIMBYBOT_DEFAULT_VOLUME", 50, 0, 100),
    )
