"""Slash commands: /play, /skip, /pause, /resume, /stop, /queue, /volume, /nowplaying."""

from __future__ import annotations

from typing import cast

import discord
import wavelink
from discord import app_commands
from discord.ext import commands


def describe(track: wavelink.Playable) -> str:
    minutes, seconds = divmod(track.length // 1000, 60)
    return f"**{track.title}** by {track.author} ({minutes}:{seconds:02d})"


class Music(commands.Cog):
    def __init__(self, bot: commands.Bot, default_volume: int) -> None:
        self.bot = bot
        self.default_volume = default_volume

    async def _player(self, interaction: discord.Interaction, join: bool) -> wavelink.Player | None:
        guild = interaction.guild
        if guild is None:
            await interaction.response.send_message("Music works in servers only.", ephemeral=True)
            return None
        if guild.voice_client is not None:
            return cast(wavelink.Player, guild.voice_client)
        member = interaction.user
        channel = getattr(getattr(member, "voice", None), "channel", None)
        if not join or channel is None:
            await interaction.response.send_message("Join a voice channel first.", ephemeral=True)
            return None
        player: wavelink.Player = await channel.connect(cls=wavelink.Player)
        player.autoplay = wavelink.AutoPlayMode.partial
        await player.set_volume(self.default_volume)
        return player

    @app_commands.command(description="Play a song or playlist (search words or a URL)")
    async def play(self, interaction: discord.Interaction, query: str) -> None:
        player = await self._player(interaction, join=True)
        if player is None:
            return
        await interaction.response.defer()
        found = await wavelink.Playable.search(query)
        if not found:
            await interaction.followup.send(f"Nothing found for `{query}`.")
            return
        if isinstance(found, wavelink.Playlist):
            added = await player.queue.put_wait(found)
            message = f"Queued {added} tracks from **{found.name}**."
        else:
            await player.queue.put_wait(found[0])
            message = f"Queued {describe(found[0])}."
        if not player.playing:
            await player.play(player.queue.get())
        await interaction.followup.send(message)

    @app_commands.command(description="Skip the current track")
    async def skip(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            skipped = await player.skip(force=True)
            await interaction.response.send_message(f"Skipped {describe(skipped)}." if skipped else "Nothing to skip.")

    @app_commands.command(description="Pause playback")
    async def pause(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            await player.pause(True)
            await interaction.response.send_message("Paused.")

    @app_commands.command(description="Resume playback")
    async def resume(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            await player.pause(False)
            await interaction.response.send_message("Resumed.")

    @app_commands.command(description="Stop, clear the queue and leave the channel")
    async def stop(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            player.queue.clear()
            await player.disconnect()
            await interaction.response.send_message("Stopped.")

    @app_commands.command(name="queue", description="Show the next tracks")
    async def show_queue(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            upcoming = [describe(t) for t in list(player.queue)[:10]]
            text = "\n".join(f"{i}. {t}" for i, t in enumerate(upcoming, 1)) or "The queue is empty."
            await interaction.response.send_message(text)

    @app_commands.command(description="Set the volume (0-100)")
    async def volume(self, interaction: discord.Interaction, percent: app_commands.Range[int, 0, 100]) -> None:
        if player := await self._player(interaction, join=False):
            await player.set_volume(percent)
            await interaction.response.send_message(f"Volume {percent}%.")

    @app_commands.command(description="Show the track that is playing")
    async def nowplaying(self, interaction: discord.Interaction) -> None:
        if player := await self._player(interaction, join=False):
            current = player.current
            await interaction.response.send_message(describe(current) if current else "Nothing is playing.")
