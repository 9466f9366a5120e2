"""A small Discord on 127.0.0.1: v10 REST and the gateway websocket, enough for an unmodified discord.py client.

This module holds its core, `DiscordStandin`: the world (servers, channels, users), the clock, the lifecycle,
waiting, and messages as users see them. The rest is mixed in, one module per seam: what a test's users do
(actions.py), the gateway (gateway.py), REST plumbing (rest.py), the REST routes by resource (rest_application.py,
rest_channels.py, rest_interactions.py) and how messages are made, edited and deleted (messages.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from typing import Any, Callable, Iterable

from aiohttp import web

from .actions import UserActions
from .gateway import Gateway, GatewayConnection
from .interactions import Interaction, StandinError, wait_condition
from .messages import Messages, Ping
from .model import (
    ATTACH_FILES, DEFAULT_EVERYONE_PERMISSIONS, EMBED_LINKS, MODERATOR_PERMISSIONS, SEND_MESSAGES, VIEW_CHANNEL,
    Attachment, Channel, Guild, Member, Message, Role, Snowflakes, User,
)
from .rest import API_PREFIX, RecordedRequest, RestRouting
from .rest_application import ApplicationRoutes
from .rest_channels import ChannelRoutes
from .rest_interactions import InteractionRoutes


class DiscordStandin(UserActions, Gateway, RestRouting, ApplicationRoutes, ChannelRoutes,
                     InteractionRoutes, Messages):
    """Discord, as far as a discord.py bot can tell. Use as `async with DiscordStandin() as discord:`."""

    def __init__(self, *, token: str | None = None, upload_limit: int = 10 * 1024 * 1024,
                 port: int = 0) -> None:
        self.token = token or f"standin.{secrets.token_urlsafe(24)}"
        self.upload_limit = upload_limit  # bytes of files per request; more gets 413 / 40005
        self.response_deadline = 3.0  # seconds to the first interaction response; later gets 404 / 10062
        self.token_lifetime = 15 * 60.0  # seconds an interaction token works; later gets 401 / 50027
        self.edit_limit = 5  # message edits per channel ...
        self.edit_window = 5.0  # ... per this many seconds; more gets 429
        self.busy_posts = 0  # the next this many channel messages the bot posts get a short 429, as a busy Discord's
        self.heartbeat_interval = 41.25  # seconds, sent in HELLO
        self.refuse_resume = True  # answer RESUME with op 9 (session invalid), as Discord may
        self.recommended_shards: int | None = None  # GET /gateway/bot's `shards`; None: one per 1,000 servers
        self.enforce_default_permissions = True  # users lacking a command's default_member_permissions can't see it
        self.allow_unknown_routes = False  # the fixture fails a test that called a route the stand-in lacks
        self.requests: list[RecordedRequest] = []
        self.unknown_routes: list[RecordedRequest] = []
        self.identifies = 0
        self.resumes = 0
        self.gateway_queries: list[dict[str, str]] = []  # the query string of each gateway connection
        self.pings: list[Ping] = []  # every notification a created message sent, oldest first

        self._ids = Snowflakes()
        self._clock_offset = 0.0
        self._build_world()
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._messages: dict[int, Message] = {}
        self._option_attachments: dict[int, Attachment] = {}  # files members attached to slash-command options
        self._interactions: dict[int, Interaction] = {}
        self._interactions_by_token: dict[str, Interaction] = {}
        self._edit_times: dict[int, deque[float]] = {}
        self._connections: list[GatewayConnection] = []
        self._session_shards: dict[str, tuple[int, int] | None] = {}
        self._routes = self._build_routes()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = port or None  # a fixed port (a bot may be started before the stand-in), or free

    # -- the world -------------------------------------------------------------------------------------------

    def _build_world(self) -> None:
        new = self._ids.next
        self.bot_user = User(new(), "imagine-bot", bot=True)
        self.application_id = self.bot_user.id  # Discord gives a bot user the application's id
        self.alice = User(new(), "alice", global_name="Alice")
        self.bob = User(new(), "bob", global_name="Bob")
        self.mod = User(new(), "mod", global_name="Mod")
        self.owner = User(new(), "owner", global_name="Owner")
        self.carol = User(new(), "carol", global_name="Carol")
        # Server A (`guild`): where the tests happen. Server B (`other_guild`): the bot is in it too, and so is
        # alice; carol only there. Channel names are unique across servers so that tests can name them.
        # Their ids put them on different shards of two (server A on shard 0, B on shard 1), so a sharded bot's
        # test covers both connections.
        self.guilds: list[Guild] = [
            self._new_guild("Imagine Test Server", self.owner, ["general", "art", "nsfw-art"],
                            [(self.alice, []), (self.bob, []), (self.mod, ["Moderator"]), (self.owner, [])],
                            shard=(0, 2)),
            self._new_guild("Another Server", self.carol, ["elsewhere"], [(self.carol, []), (self.alice, [])],
                            shard=(1, 2)),
        ]
        self._dm_channels: dict[int, Channel] = {}

    def _new_guild(self, name: str, owner: User, channel_names: list[str],
                   people: list[tuple[User, list[str]]], shard: tuple[int, int] = (0, 1)) -> Guild:
        new = self._ids.next
        guild_id = self._ids.next_on_shard(*shard)
        everyone = Role(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS)
        moderator = Role(new(), "Moderator", MODERATOR_PERMISSIONS, position=2)
        bot_role = Role(new(), "imagine-bot", VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES,
                        position=1, managed=True)
        roles = [everyone, bot_role, moderator]
        channels = [Channel(new(), channel, guild_id, position=i, nsfw=channel.startswith("nsfw"))
                    for i, channel in enumerate(channel_names)]
        members = [Member(self.bot_user, [bot_role])]
        members += [Member(user, [r for r in roles if r.name in names]) for user, names in people]
        return Guild(guild_id, name, owner.id, roles, channels, members)

    @property
    def guild(self) -> Guild:
        """The first server, where tests happen unless they say otherwise."""
        return self.guilds[0]

    @property
    def other_guild(self) -> Guild:
        """A second server the bot is also in (channel `elsewhere`; members carol and alice)."""
        return self.guilds[1]

    def guild_by_id(self, guild_id: int | str | None) -> Guild | None:
        return next((g for g in self.guilds if str(g.id) == str(guild_id)), None)

    def guild_of(self, channel: Channel) -> Guild | None:
        """The server a channel belongs to (None for a DM channel)."""
        return self.guild_by_id(channel.guild_id) if channel.guild_id is not None else None

    @property
    def users(self) -> list[User]:
        found: dict[int, User] = {}
        for guild in self.guilds:
            found.update((m.user.id, m.user) for m in guild.members)
        return list(found.values())

    def channel(self, name_or_id: str | int | Channel) -> Channel:
        """A text channel of any server (`general`, `art`, `nsfw-art`, `elsewhere`) or a DM channel, by name or id."""
        if isinstance(name_or_id, Channel):
            return name_or_id
        channels = [c for g in self.guilds for c in g.channels]
        for channel in [*channels, *self._dm_channels.values()]:
            if channel.name == str(name_or_id).lstrip("#") or channel.id == name_or_id:
                return channel
        raise StandinError(f"no channel {name_or_id!r}; channels: {[c.name for c in channels]}")

    def user(self, name_or_id: str | int | User | Member) -> User:
        if isinstance(name_or_id, Member):
            return name_or_id.user
        if isinstance(name_or_id, User):
            return name_or_id
        for user in self.users:
            if name_or_id in (user.name, user.id):
                return user
        raise StandinError(f"no user {name_or_id!r}; users: {[u.name for u in self.users]}")

    def member(self, user: str | int | User | Member, guild: Guild | None = None) -> Member:
        """The user as a member of `guild` (the first server unless named)."""
        guild = guild or self.guild
        member = guild.member(self.user(user).id)
        if member is None:
            raise StandinError(f"{self.user(user).name} is not a member of {guild.name!r}")
        return member

    def add_member(self, name: str, *, roles: Iterable[str] = (), guild: Guild | None = None) -> User:
        """Another user joins a server (only the stand-in's record; no GUILD_MEMBER_ADD is sent)."""
        guild = guild or self.guild
        user = User(self._ids.next(), name)
        guild.members.append(Member(user, [guild.role(r) for r in roles]))
        return user

    def permissions(self, user: str | User | Member, channel: str | Channel | None = None) -> int:
        channel = self.channel(channel) if channel else None
        guild = (self.guild_of(channel) if channel else None) or self.guild
        return guild.permissions_for(self.member(user, guild), channel)

    def pinged(self, message: Message | None = None) -> set[User]:
        """Everyone a created message notified (all messages, or one): what tests of mentions assert on."""
        return {p.user for p in self.pings if message is None or p.message is message}

    # -- clock -------------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The stand-in's clock (monotonic seconds); `advance_clock` moves it forward."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Jump the stand-in's clock forward: deadlines, token lifetimes and edit windows all follow it."""
        self._clock_offset += seconds

    def expire_token(self, interaction: Interaction) -> None:
        """Make the interaction's token 15 minutes old: its webhook calls now get 401 / 50027."""
        interaction.created_at = self.now() - self.token_lifetime - 1

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> "DiscordStandin":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("GET", "/gateway", self._gateway)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment)
        app.router.add_route("GET", "/media-proxy/attachments/{channel_id}/{attachment_id}/{filename}",
                             self._serve_attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for conn in list(self._connections):
            await conn.ws.close(code=1001, message=b"stand-in shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a bot run as its own process (`python -m bot`)."""
        return {"DISCORD_TOKEN": self.token, "DISCORD_API_BASE": self.api_base,
                "DISCORD_GATEWAY_URL": self.gateway_url, "DISCORD_GUILD_ID": str(self.guild.id)}

    def point_discord_py_here(self) -> Callable[[], None]:
        """Aim this process's discord.py at the stand-in (as the bot does from its settings); returns an undo."""
        import discord.gateway
        import discord.http
        import yarl

        saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

        def undo() -> None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved

        return undo

    # -- waiting -----------------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
        assert self._changed is not None, "the stand-in is not started"
        await wait_condition(self._changed, predicate, timeout, describe)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        """Wait until something about the stand-in's state holds, re-checked on every change it sees."""
        await self._wait(predicate, timeout, lambda: f"{what} did not hold within {timeout}s")

    @property
    def connected(self) -> bool:
        """Whether a client is logged in on the gateway (identified on an open connection)."""
        return bool(self._live_connections())

    @property
    def shards(self) -> list[tuple[int, int]]:
        """The (shard_id, num_shards) of each identified open connection, in order; (0, 1) for an unsharded one."""
        return sorted(c.shard or (0, 1) for c in self._live_connections())

    def connection(self, shard_id: int = 0) -> GatewayConnection:
        """The latest identified open connection of a shard (shard 0 is an unsharded client's one connection)."""
        live = [c for c in self._live_connections() if (c.shard or (0, 1))[0] == shard_id]
        if not live:
            raise StandinError(f"no connection of shard {shard_id}; shards connected: {self.shards}")
        return live[-1]

    def _live_connections(self) -> list[GatewayConnection]:
        return [c for c in self._connections if c.open and c.identified]

    def _connection_for(self, guild_id: int | None) -> GatewayConnection | None:
        """The connection Discord sends a guild's events on (the latest identified one of the owning shard)."""
        live = [c for c in self._live_connections() if c.owns(guild_id)]
        return live[-1] if live else None

    async def wait_for_connection(self, timeout: float = 10.0, *, identifies: int | None = None,
                                  shards: int | None = None) -> None:
        """Wait until a client has identified (optionally: until the gateway has seen this many IDENTIFYs, or
        this many shards are connected)."""
        await self._wait(lambda: self.connected and (identifies is None or self.identifies >= identifies)
                         and (shards is None or len(self.shards) >= shards),
                         timeout, lambda: f"no client identified on the gateway within {timeout}s"
                                          f" (identifies so far: {self.identifies}; shards: {self.shards})")

    async def disconnect_clients(self, code: int = 4000) -> None:
        """Drop every gateway connection, as Discord does now and then; clients resume or re-identify."""
        for conn in list(self._connections):
            await conn.ws.close(code=code, message=b"dropped by the stand-in")

    # -- messages as users see them ---------------------------------------------------------------------------

    def messages(self, channel: str | Channel, *, include_ephemeral: bool = True) -> list[Message]:
        """Messages in a channel, oldest first (ephemeral ones included unless asked otherwise)."""
        channel = self.channel(channel)
        return [m for m in self._messages.values()
                if m.channel_id == channel.id and not m.deleted and (include_ephemeral or not m.ephemeral)]

    def latest_message(self, channel: str | Channel) -> Message | None:
        found = self.messages(channel)
        return found[-1] if found else None

    def message(self, message_id: int) -> Message:
        return self._messages[int(message_id)]

    async def wait_for_message(self, channel: str | Channel, predicate: Callable[[Message], bool] = lambda m: True,
                               timeout: float = 5.0) -> Message:
        """Wait until a message in the channel satisfies the predicate (re-checked on every create and edit)."""
        channel = self.channel(channel)
        found: list[Message] = []

        def check() -> bool:
            for message in reversed(self.messages(channel)):
                if not message.loading and predicate(message):
                    found.append(message)
                    return True
            return False

        await self._wait(check, timeout, lambda: f"no message in #{channel.name} matched within {timeout}s;"
                                                 f" latest: {self.messages(channel)[-3:]}")
        return found[0]

    def requests_to(self, route: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests for one route template (e.g. "/channels/{channel_id}/messages")."""
        return [r for r in self.requests if r.route == route and (method is None or r.method == method)]
