"""The running bot: a discord.py client with a wavelink (Lavalink v4) node pool."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord
import wavelink
from discord.ext import commands

from .config import Settings
from .music import Music

log = logging.getLogger("dimbybot")


class DimbyBot(commands.Bot):
    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.default()
        intents.voice_states = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents)
        self.settings = settings

    async def setup_hook(self) -> None:
        node = wavelink.Node(uri=self.settings.lavalink_uri, password=self.settings.lavalink_password)
        await wavelink.Pool.connect(nodes=[node], client=self, cache_capacity=100)
        await self.add_cog(Music(self, self.settings.default_volume))
        if self.settings.guild_id is not None:
            # Guild-scoped sync is instant; global sync can take up to an hour to show.
            guild = discord.Object(id=self.settings.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def on_wavelink_node_ready(self, payload: wavelink.NodeReadyEventPayload) -> None:
        log.info("Lavalink node %s ready (resumed=%s)", payload.node.identifier, payload.resumed)


async def _serve(settings: Settings) -> None:
    """Log in and run; while Discord cannot be reached, retry with backoff instead of exiting,
    so a Discord outage does not turn into a restart loop. A rejected token ends the process."""
    delay = 5.0
    while True:
        bot = DimbyBot(settings)
        try:
            async with bot:
                await bot.start(settings.discord_token)
            return
        except discord.LoginFailure:
            raise
        except (OSError, aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError) as err:
            log.warning("Discord unreachable (%s); retrying in %.0f s", err, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 300.0)


def run(settings: Settings) -> None:
    discord.utils.setup_logging(level=logging.INFO)
    try:
        asyncio.run(_serve(settings))
    except discord.LoginFailure as err:
        raise SystemExit(f"dimbybot: Discord refused the token: {err}") from None
