"""`--self-check`: is the configuration valid and does Lavalink answer? Never contacts Discord.

Used by the container's HEALTHCHECK and by the deploy script after a roll-out. Prints one
line and returns 0 (healthy) or 1 (with the reason).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from . import config


def check_lavalink(settings: config.Settings, timeout: float = 5.0) -> str:
    """Return Lavalink's version; raise RuntimeError with a reason when it does not answer."""
    url = settings.lavalink_uri + "/version"
    request = urllib.request.Request(url, headers={"Authorization": settings.lavalink_password})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed scheme)
            return response.read(200).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as err:
        hint = " (wrong LAVALINK_PASSWORD?)" if err.code in (401, 403) else ""
        raise RuntimeError(f"Lavalink at {settings.lavalink_uri} answered HTTP {err.code}{hint}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise RuntimeError(f"Lavalink at {settings.lavalink_uri} is unreachable: {reason}") from None


def run(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """Return (exit code, one-line message)."""
    try:
        settings = config.load(env)
    except config.ConfigError as err:
        return 1, f"self-check failed: configuration: {err}"
    try:
        version = check_lavalink(settings, timeout)
    except RuntimeError as err:
        return 1, f"self-check failed: {err}"
    return 0, f"self-check ok: Lavalink {version} at {settings.lavalink_uri}"
