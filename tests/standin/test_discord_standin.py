"""The Discord stand-in, driven by a tiny real discord.py bot over loopback: Discord's rules hold for it."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import discord as dpy
import pytest
import pytest_asyncio
from discord import app_commands, ui
from discord.ext import commands
from PIL import Image

from tests.discord_standin import DiscordStandin, StandinError

Handler = Callable[..., Awaitable[None]]


def png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, "PNG")
    return buffer.getvalue()


class Reroll(ui.DynamicItem[ui.Button], template=r"tiny:reroll:(?P<job>\d+)"):
    """A persistent button: its state lives in the custom_id, so any bot process can answer a click."""

    def __init__(self, job: int) -> None:
        super().__init__(ui.Button(label="Reroll", emoji="🔄", custom_id=f"tiny:reroll:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(cls, interaction: dpy.Interaction, item: ui.Item, match) -> "Reroll":
        return cls(int(match["job"]))

    async def callback(self, interaction: dpy.Interaction) -> None:
        interaction.client.clicks.append((interaction.user.name, self.job))
        await interaction.client.on_click(interaction, self.job)


limits = app_commands.Group(name="limits", description="Per-user limits",
                            default_permissions=dpy.Permissions(manage_channels=True))


@limits.command(name="set", description="Set the hourly job limit")
async def limits_set(interaction: dpy.Interaction, jobs_per_hour: app_commands.Range[int, 1, 100]) -> None:
    interaction.client.seen.append(("limits set", {"jobs_per_hour": jobs_per_hour}))
    await interaction.response.send_message(f"limit is now {jobs_per_hour}", ephemeral=True)


@app_commands.command(description="Draw a picture")
@app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ("1:1", "16:9")])
async def imagine(interaction: dpy.Interaction, prompt: str, aspect: str = "1:1", steps: int = 20,
                  image: dpy.Attachment | None = None) -> None:
    bot: TinyBot = interaction.client  # type: ignore[assignment]
    bot.seen.append(("imagine", {"prompt": prompt, "aspect": aspect, "steps": steps,
                                 "channel": interaction.channel.name, "user": interaction.user.name}))
    try:
        await bot.on_imagine(interaction)
    except Exception as error:  # the test asserts on what Discord refused
        bot.failures.put_nowait(error)


class TinyBot(commands.Bot):
    """One global slash command, one guild command group, one persistent button."""

    def __init__(self, guild_id: int, **options) -> None:
        # discord.py waits guild_ready_timeout (2 s by default) after the last GUILD_CREATE before on_ready.
        super().__init__(command_prefix=commands.when_mentioned, intents=dpy.Intents.default(),
                         guild_ready_timeout=0.1, **options)
        self.guild_id = guild_id
        self.seen: list[tuple[str, dict]] = []
        self.clicks: list[tuple[str, int]] = []
        self.failures: asyncio.Queue[Exception] = asyncio.Queue()
        self.on_imagine: Handler = self.reply_done
        self.on_click: Handler = self.reply_rerolling

    async def reply_done(self, interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("done")

    async def reply_rerolling(self, interaction: dpy.Interaction, job: int) -> None:
        await interaction.response.send_message(f"rerolling job {job}")

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause before a re-IDENTIFY: the stand-in has no identify rate limit to respect."""

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll)
        self.tree.add_command(imagine)
        self.tree.add_command(limits, guild=dpy.Object(self.guild_id))
        await self.tree.sync()
        await self.tree.sync(guild=dpy.Object(self.guild_id))

    async def failure(self, timeout: float = 5.0) -> Exception:
        return await asyncio.wait_for(self.failures.get(), timeout)


class ShardedTinyBot(TinyBot, commands.AutoShardedBot):
    """The same bot on one gateway connection per shard."""


async def start_bot(discord: DiscordStandin, cls: type[TinyBot] = TinyBot, **options) -> tuple[TinyBot, asyncio.Task]:
    bot = cls(discord.guild.id, **options)
    task = asyncio.create_task(bot.start(discord.token))
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the login/connect error
    assert ready in done, "the tiny bot did not become ready"
    return bot, task


async def stop_bot(bot: TinyBot, task: asyncio.Task) -> None:
    await bot.close()
    await asyncio.wait_for(task, 5)


@pytest_asyncio.fixture
async def bot(discord: DiscordStandin) -> AsyncIterator[TinyBot]:
    bot, task = await start_bot(discord)
    yield bot
    await stop_bot(bot, task)


async def test_bot_logs_in_over_a_compressed_gateway_and_syncs_global_and_guild_commands(discord, bot):
    """Login, READY + GUILD_CREATE over zlib-stream, and both command syncs land in the stand-in."""
    assert bot.user.id == discord.bot_user.id
    guild = bot.get_guild(discord.guild.id)
    assert {c.name for c in guild.text_channels} == {"general", "art", "nsfw-art"}
    assert guild.get_channel(discord.channel("nsfw-art").id).is_nsfw()
    assert guild.me.id == bot.user.id and guild.get_role(discord.guild.role("Moderator").id).permissions.manage_channels
    assert discord.gateway_queries[0]["compress"] == "zlib-stream"
    assert [c["name"] for c in discord.global_commands] == ["imagine"]
    assert [c["name"] for c in discord.guild_commands[discord.guild.id]] == ["limits"]
    assert discord.requests_to("/users/@me", "GET") and discord.requests_to("/oauth2/applications/@me", "GET")


async def test_slash_options_reach_the_handler_and_a_deferred_followup_brings_a_file(discord, bot):
    """Options arrive typed; defer, then a follow-up with a PNG fills in the 'thinking' message."""

    async def defer_then_file(interaction: dpy.Interaction) -> None:
        await interaction.response.defer()
        await interaction.followup.send("here it is", file=dpy.File(io.BytesIO(png()), "fox.png"))

    bot.on_imagine = defer_then_file
    i = await discord.slash(discord.alice, "art", "imagine", prompt="a fox", aspect="16:9", steps=30)
    ack = await i.acked()
    message = await i.wait_for(lambda m: m.attachments)
    assert bot.seen == [("imagine", {"prompt": "a fox", "aspect": "16:9", "steps": 30,
                                     "channel": "art", "user": "alice"})]
    assert ack.type == 5 and ack.elapsed < 3
    assert message is await i.response_message() and message.content == "here it is"
    attachment = message.attachments[0]
    assert (attachment.filename, attachment.width, attachment.height) == ("fox.png", 64, 48)
    assert attachment.image().size == (64, 48)
    assert message.history[0].loading and not message.ephemeral


async def test_a_slash_attachment_option_can_be_downloaded_from_its_url(discord, bot):
    """A file given to an attachment option arrives with its metadata, and its url serves the same bytes."""

    async def read_it(interaction: dpy.Interaction) -> None:
        image: dpy.Attachment = interaction.namespace.image
        data = await image.read()
        await interaction.response.send_message(f"{image.filename} {image.content_type} {image.size} {len(data)}"
                                                f" {data == png()}")

    bot.on_imagine = read_it
    i = await discord.slash(discord.alice, "art", "imagine", prompt="a fox", image=("fox.png", png()))
    message = await i.wait_for(lambda m: m.content)
    assert message.content == f"fox.png image/png {len(png())} {len(png())} True"


async def test_a_moderator_runs_a_guild_subcommand_that_plain_members_cannot_see(discord, bot):
    """`/limits set` reaches its handler for a moderator; Discord hides it from alice."""
    i = await discord.slash(discord.mod, "general", "limits set", jobs_per_hour=2)
    reply = await i.wait_for(lambda m: "limit" in m.content)
    assert bot.seen == [("limits set", {"jobs_per_hour": 2})]
    assert reply.ephemeral and i.ephemeral
    with pytest.raises(StandinError, match="cannot see /limits"):
        await discord.slash(discord.alice, "general", "limits set", jobs_per_hour=2)
    with pytest.raises(StandinError, match="no option 'colour'"):
        await discord.slash(discord.alice, "general", "imagine", prompt="x", colour="red")


async def test_a_first_response_after_three_seconds_is_refused_as_unknown_interaction(discord, bot):
    """A handler that answers 3.2 s late gets NotFound 10062, and the interaction stays unacknowledged."""

    async def answer_late(interaction: dpy.Interaction) -> None:
        await asyncio.sleep(3.2)  # the lateness is the thing under test
        await interaction.response.send_message("too late")

    bot.on_imagine = answer_late
    i = await discord.slash(discord.alice, "general", "imagine", prompt="slow fox")
    error = await bot.failure(timeout=6)
    assert isinstance(error, dpy.NotFound) and error.code == 10062
    assert i.ack is None and i.refusals[0]["code"] == 10062


async def test_a_second_initial_response_is_refused_as_already_acknowledged(discord, bot):
    """Two racing initial responses: one lands, the other gets 400 / 40060."""

    async def answer_twice(interaction: dpy.Interaction) -> None:
        results = await asyncio.gather(interaction.response.send_message("one"),
                                       interaction.response.send_message("two"), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    bot.on_imagine = answer_twice
    i = await discord.slash(discord.alice, "general", "imagine", prompt="twice")
    error = await bot.failure()
    assert isinstance(error, dpy.HTTPException) and (error.status, error.code) == (400, 40060)
    assert (await i.response_message()).content in ("one", "two") and len(i.messages) == 1


async def test_an_attachment_over_the_upload_limit_is_refused_with_413(discord, bot):
    """With a 1 KiB limit, a 2 KiB file gets 413 / 40005."""
    discord.upload_limit = 1024

    async def send_big_file(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message(file=dpy.File(io.BytesIO(b"x" * 2048), "big.bin"))

    bot.on_imagine = send_big_file
    await discord.slash(discord.alice, "general", "imagine", prompt="huge")
    error = await bot.failure()
    assert isinstance(error, dpy.HTTPException) and (error.status, error.code) == (413, 40005)


async def test_a_burst_of_edits_is_rate_limited_and_discord_py_retries_until_all_land(discord, bot):
    """Webhook and channel message edits past the per-channel limit get 429s that discord.py waits out."""
    discord.edit_limit, discord.edit_window = 2, 0.3

    async def show_progress(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("0%")
        for percent in (25, 50, 75, 100):
            await interaction.edit_original_response(content=f"{percent}%")
        status = await interaction.channel.send("queue: 3")
        for left in (2, 1, 0):
            await status.edit(content=f"queue: {left}")

    bot.on_imagine = show_progress
    i = await discord.slash(discord.alice, "general", "imagine", prompt="progress")
    final = await i.wait_for(lambda m: m.content == "100%")
    status = await discord.wait_for_message("general", lambda m: m.content == "queue: 0")
    assert [v.content for v in final.history] == ["0%", "25%", "50%", "75%"]
    assert status.edits == 3
    for route in ("/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                  "/channels/{channel_id}/messages/{message_id}"):
        statuses = [r.status for r in discord.requests_to(route, "PATCH")]
        assert 429 in statuses and statuses[-1] == 200 and statuses.index(429) < len(statuses) - 1


async def test_a_token_older_than_fifteen_minutes_is_refused_as_invalid(discord, bot):
    """After `expire_token`, a follow-up gets 401 / 50027."""
    go_on = asyncio.Event()

    async def defer_then_wait(interaction: dpy.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await go_on.wait()
        await interaction.followup.send("finally")

    bot.on_imagine = defer_then_wait
    i = await discord.slash(discord.alice, "general", "imagine", prompt="slow")
    await i.acked()
    discord.expire_token(i)
    go_on.set()
    error = await bot.failure()
    assert isinstance(error, dpy.HTTPException) and (error.status, error.code) == (401, 50027)


async def test_a_button_click_on_a_bot_message_reaches_the_dynamic_item(discord, bot):
    """bob clicks 🔄 on alice's result; the DynamicItem answers with the job from its custom_id."""

    async def post_with_button(interaction: dpy.Interaction) -> None:
        view = ui.View(timeout=None)
        view.add_item(Reroll(7))
        await interaction.response.send_message("a fox", view=view)

    bot.on_imagine = post_with_button
    i = await discord.slash(discord.alice, "general", "imagine", prompt="a fox")
    result = await i.response_message()
    assert [b["custom_id"] for b in result.buttons] == ["tiny:reroll:7"]
    click = await discord.click(discord.bob, result, "🔄")
    reply = await click.wait_for(lambda m: m.content.startswith("rerolling"))
    assert reply.content == "rerolling job 7" and bot.clicks == [("bob", 7)]
    assert (await click.acked()).type == 4


async def test_a_click_answered_with_a_deferred_update_edits_the_clicked_message(discord, bot):
    """defer() on a click then edit_original_response changes the clicked message itself."""

    async def post_with_button(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("a fox", view=ui.View(timeout=None).add_item(Reroll(3)))

    async def mark_done(interaction: dpy.Interaction, job: int) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content=f"job {job} rerolled", view=None)

    bot.on_imagine, bot.on_click = post_with_button, mark_done
    result = await (await discord.slash(discord.alice, "art", "imagine", prompt="a fox")).response_message()
    click = await discord.click(discord.alice, result, "Reroll")
    edited = await click.wait_for(lambda m: True)
    assert edited is result and edited.content == "job 3 rerolled" and edited.buttons == []
    assert (await click.acked()).type == 6 and edited.history[0].buttons


async def test_a_bot_in_its_own_process_logs_in_and_answers(discord):
    """`python -m` style: a bot process given only DISCORD_* variables answers a slash command."""
    env = {**os.environ, **discord.env, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.standin.process_bot", env=env)
    try:
        await discord.wait_for_connection(timeout=20)
        i = await discord.slash(discord.bob, "general", "imagine", prompt="from afar")
        assert (await i.response_message(timeout=15)).content == "from afar, from another process"
    finally:
        process.terminate()
        await process.wait()


async def test_a_restarted_bot_logs_in_again_and_answers(discord, bot):
    """Close the bot, start another client: a fresh IDENTIFY gets READY and the new client answers."""
    await bot.close()
    second, task = await start_bot(discord)
    try:
        i = await discord.slash(discord.alice, "general", "imagine", prompt="again")
        assert (await i.response_message()).content == "done"
        assert discord.identifies == 2 and second.seen and not bot.seen
    finally:
        await stop_bot(second, task)


async def test_a_dropped_connection_is_refused_resume_and_the_bot_identifies_again(discord, bot):
    """Discord drops the socket; the RESUME gets op 9 and discord.py re-identifies and keeps working."""
    await discord.disconnect_clients()
    await discord.wait_for_connection(identifies=2)
    i = await discord.slash(discord.bob, "general", "imagine", prompt="after the drop")
    assert (await i.response_message()).content == "done"
    assert discord.resumes == 1


async def test_unknown_routes_get_discords_404_and_are_recorded(discord, bot):
    """A route the stand-in lacks answers 404 / code 0 and shows up in `unknown_routes`."""
    discord.allow_unknown_routes = True
    with pytest.raises(dpy.NotFound) as refused:
        await bot.http.request(dpy.http.Route("GET", "/stickers/{sticker_id}", sticker_id=1))
    assert refused.value.code == 0 and refused.value.text == "404: Not Found"
    assert [r.path for r in discord.unknown_routes] == ["/stickers/1"]


async def test_a_wrong_token_cannot_log_in(discord):
    """Any token but the stand-in's gets 401 and discord.py reports LoginFailure."""
    stranger = TinyBot(discord.guild.id)
    with pytest.raises(dpy.LoginFailure):
        await stranger.login("not-the-token")
    await stranger.close()


async def test_allowed_mentions_decide_who_a_channel_message_pings(discord, bot):
    """Content mentions ping per `allowed_mentions` as Discord documents; embeds never ping; bad combos get 400."""
    channel = bot.get_channel(discord.channel("general").id)
    moderator = discord.guild.role("Moderator")
    text = f"@everyone hi {discord.alice.mention} <@!{discord.bob.id}> {moderator.mention}"
    sent = []

    async def send(**kwargs) -> dpy.Message:
        message = await channel.send(**kwargs)
        sent.append(discord.message(message.id))
        return message

    await send(content=text)  # no allowed_mentions: Discord parses everything
    await send(content=text, allowed_mentions=dpy.AllowedMentions.none())
    await send(content=text, allowed_mentions=dpy.AllowedMentions(
        everyone=False, roles=False, users=[dpy.Object(discord.bob.id), dpy.Object(discord.carol.id)]))
    await send(content=text, allowed_mentions=dpy.AllowedMentions(everyone=False, users=False,
                                                                  roles=[dpy.Object(moderator.id)]))
    await send(embed=dpy.Embed(description=text))

    everyone, nobody, only_bob, moderators, embed = sent
    assert discord.pinged(everyone) == {discord.alice, discord.bob, discord.mod, discord.owner}
    assert everyone.data["mention_everyone"] and everyone.data["mention_roles"] == [str(moderator.id)]
    assert discord.pinged(nobody) == set() and nobody.content == text
    assert (nobody.data["mentions"], nobody.data["mention_roles"], nobody.data["mention_everyone"]) == ([], [], False)
    assert discord.pinged(only_bob) == {discord.bob}  # carol is listed but not in the content
    assert [u["id"] for u in only_bob.data["mentions"]] == [str(discord.bob.id)]
    assert discord.pinged(moderators) == {discord.mod}
    assert discord.pinged(embed) == set()

    with pytest.raises(dpy.HTTPException) as refused:
        await bot.http.request(dpy.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id),
                               json={"content": text, "allowed_mentions": {"parse": ["users"],
                                                                           "users": [str(discord.bob.id)]}})
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert "mutually exclusive" in str(refused.value)


async def test_a_deferred_response_pings_when_its_followup_fills_it_and_edits_never_ping(discord, bot):
    """Filling a 'thinking' message is its creation (it pings); editing it later pings no one; a new follow-up does."""

    async def defer_fill_edit_follow(interaction: dpy.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"done, {discord.alice.mention}")
        await interaction.edit_original_response(content=f"done, {discord.bob.mention}")
        await interaction.followup.send(f"and {discord.mod.mention}")

    bot.on_imagine = defer_fill_edit_follow
    i = await discord.slash(discord.alice, "general", "imagine", prompt="a fox")
    second = await i.wait_for(lambda m: m.content.startswith("and"))

    original = await i.response_message()
    assert original.content == f"done, {discord.bob.mention}"
    assert [u["id"] for u in original.data["mentions"]] == [str(discord.bob.id)]  # parsed again on edit ...
    assert discord.pinged(original) == {discord.alice}  # ... but only the creation notified
    assert discord.pinged(second) == {discord.mod}
    assert [(p.message, p.user) for p in discord.pings] == [(original, discord.alice), (second, discord.mod)]


async def test_the_bot_is_in_a_second_server_with_its_own_channels_and_members(discord, bot):
    """READY lists both servers and each gets GUILD_CREATE; carol's command in server B arrives from server B."""
    other = discord.other_guild
    assert {g.id for g in bot.guilds} == {discord.guild.id, other.id}
    assert [c.name for c in bot.get_guild(other.id).text_channels] == ["elsewhere"]
    seen = []

    async def where(interaction: dpy.Interaction) -> None:
        seen.append((interaction.guild_id, interaction.user.name))
        await interaction.response.send_message(f"hello from {interaction.guild.name}")

    bot.on_imagine = where
    reply = await (await discord.slash(discord.carol, "elsewhere", "imagine", prompt="x")).response_message()
    assert seen == [(other.id, "carol")] and reply.content == "hello from Another Server"
    assert discord.channel("elsewhere").guild_id == other.id
    with pytest.raises(StandinError, match="not a member"):
        await discord.slash(discord.carol, "general", "imagine", prompt="x")
    assert discord.permissions(discord.alice, "elsewhere") == discord.permissions(discord.alice, "general")


async def test_a_forged_click_sends_a_custom_id_the_message_does_not_carry(discord, bot):
    """forge_click delivers the chosen custom_id with the real message; discord.py's DynamicItem ignores it."""

    async def post_with_button(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("a fox", view=ui.View(timeout=None).add_item(Reroll(7)))

    bot.on_imagine = post_with_button
    result = await (await discord.slash(discord.alice, "general", "imagine", prompt="a fox")).response_message()

    forged = await discord.forge_click(discord.bob, result, "tiny:reroll:8")
    real = await discord.click(discord.bob, result, "🔄")

    await real.wait_for(lambda m: m.content.startswith("rerolling"))
    assert forged.payload["data"]["custom_id"] == "tiny:reroll:8"
    assert forged.payload["message"]["id"] == str(result.id)
    assert bot.clicks == [("bob", 7)] and forged.ack is None


def _guild_events(conn, event: str) -> list[str]:
    """The server of each `event` sent on a connection (a GUILD_CREATE's own id; a DM's event: its own id)."""
    return [data.get("guild_id") or data["id"] for name, data in conn.dispatched if name == event]


async def test_two_shards_each_get_ready_with_their_own_server_and_its_interactions(discord):
    """IDENTIFY [id, 2]: each shard's READY and GUILD_CREATE name only its server; events follow the guild."""
    bot, task = await start_bot(discord, ShardedTinyBot, shard_count=2)
    try:
        assert discord.shards == [(0, 2), (1, 2)]
        a, b = discord.guild, discord.other_guild
        assert ((a.id >> 22) % 2, (b.id >> 22) % 2) == (0, 1)
        first, second = discord.connection(0), discord.connection(1)
        for conn, guild in ((first, a), (second, b)):
            ready = next(data for name, data in conn.dispatched if name == "READY")
            assert ready["shard"] == [conn.shard[0], 2] and [g["id"] for g in ready["guilds"]] == [str(guild.id)]
            assert _guild_events(conn, "GUILD_CREATE") == [str(guild.id)]
        assert {g.id: g.shard_id for g in bot.guilds} == {a.id: 0, b.id: 1}

        here = await (await discord.slash(discord.carol, "elsewhere", "imagine", prompt="x")).response_message()
        there = await (await discord.slash(discord.bob, "general", "imagine", prompt="y")).response_message()
        assert here.content == there.content == "done"
        assert _guild_events(first, "INTERACTION_CREATE") == [str(a.id)]
        assert _guild_events(second, "INTERACTION_CREATE") == [str(b.id)]
        assert _guild_events(first, "MESSAGE_CREATE") == [str(a.id)]
        assert _guild_events(second, "MESSAGE_CREATE") == [str(b.id)]

        dm = await (await bot.fetch_user(discord.alice.id)).send("hello")  # a DM's events come on shard 0
        assert [d["id"] for n, d in first.dispatched if n == "MESSAGE_CREATE" and "guild_id" not in d] == [str(dm.id)]
        assert not [d for n, d in second.dispatched if n == "MESSAGE_CREATE" and "guild_id" not in d]
    finally:
        await stop_bot(bot, task)


async def test_gateway_bot_recommends_a_shard_count_that_an_auto_sharded_bot_follows(discord):
    """GET /gateway/bot says `shards`: one per 1,000 servers, or what the test sets; AutoShardedBot uses it."""
    http = dpy.http.HTTPClient(asyncio.get_running_loop())
    await http.static_login(discord.token)
    try:
        assert (await http.get_bot_gateway())[0] == 1
        discord.recommended_shards = 2
        assert (await http.get_bot_gateway())[0] == 2
    finally:
        await http.close()
    bot, task = await start_bot(discord, ShardedTinyBot)
    try:
        assert discord.shards == [(0, 2), (1, 2)] and bot.shard_count == 2
    finally:
        await stop_bot(bot, task)


async def test_an_identify_with_an_impossible_shard_is_closed_with_4010(discord):
    """IDENTIFY with shard [2, 2] gets Discord's close code 4010 (Invalid shard) and no READY."""
    async with aiohttp.ClientSession() as session, session.ws_connect(discord.gateway_url) as ws:
        assert (await ws.receive_json())["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": discord.token, "intents": 0, "shard": [2, 2],
                                           "properties": {}}})
        closed = await ws.receive()
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4010
    assert not discord.connected and discord.identifies == 0


async def test_a_reaction_reaches_the_bot_as_a_raw_reaction_event_with_the_member(discord, bot):
    """❌ on a bot message: the message counts it and MESSAGE_REACTION_ADD (default intents) brings the member."""
    result = await (await discord.slash(discord.alice, "general", "imagine", prompt="a fox")).response_message()
    seen = asyncio.ensure_future(bot.wait_for("raw_reaction_add", timeout=5))
    await discord.react(discord.bob, result, "❌")

    event = await seen
    assert (event.message_id, event.channel_id, event.guild_id) == (result.id, result.channel_id, discord.guild.id)
    assert (event.user_id, event.member.name, event.emoji.name) == (discord.bob.id, "bob", "❌")
    assert event.message_author_id == discord.bot_user.id
    assert result.data["reactions"][0]["count"] == 1 and result.data["reactions"][0]["emoji"]["name"] == "❌"
    with pytest.raises(StandinError, match="not a member"):
        await discord.react(discord.carol, result, "❌")


async def test_a_message_context_menu_command_gets_its_target_message(discord, bot):
    """A type 3 command on a message: the handler gets the resolved message (target_id) and answers privately."""
    got = []

    async def describe(interaction: dpy.Interaction, message: dpy.Message) -> None:
        got.append((interaction.user.name, message.id, message.content, message.author.id))
        await interaction.response.send_message(f"that says {message.content!r}", ephemeral=True)

    bot.tree.add_command(app_commands.ContextMenu(name="Describe it", callback=describe))
    await bot.tree.sync()
    assert [c["type"] for c in discord.global_commands if c["name"] == "Describe it"] == [3]
    said = await discord.say(discord.alice, "general", "hello there")

    run = await discord.message_command(discord.bob, said, "Describe it")

    reply = await run.response_message()
    assert got == [("bob", said.id, "hello there", discord.alice.id)]
    assert reply.ephemeral and reply.content == "that says 'hello there'"
    assert run.payload["data"]["target_id"] == str(said.id) and reply.data["type"] == 23
    with pytest.raises(StandinError, match="is not synced"):
        await discord.message_command(discord.bob, said, "imagine")


async def test_a_bot_deletes_its_own_message_but_needs_manage_messages_for_a_members(discord, bot):
    """DELETE of the bot's own message removes it (MESSAGE_DELETE follows); a member's one is refused 403."""
    result = await (await discord.slash(discord.alice, "general", "imagine", prompt="a fox")).response_message()
    said = await discord.say(discord.alice, "general", "mine")
    channel = bot.get_channel(discord.channel("general").id)
    deleted = asyncio.ensure_future(bot.wait_for("raw_message_delete", timeout=5))

    await channel.get_partial_message(result.id).delete()
    with pytest.raises(dpy.Forbidden):
        await channel.get_partial_message(said.id).delete()

    assert (await deleted).message_id == result.id
    assert discord.messages("general") == [said] and result.deleted


class Rename(ui.Modal, title="Rename"):
    """A modal opened from a click; its submission edits the clicked message (callback type 7)."""

    name = ui.Label(text="New name", component=ui.TextInput(custom_id="name", default="a fox", max_length=50))

    async def on_submit(self, interaction: dpy.Interaction) -> None:
        try:
            await interaction.response.send_modal(Rename())  # Discord: a modal can't answer a modal submit
        except dpy.HTTPException as error:
            interaction.client.failures.put_nowait(error)
        await interaction.response.edit_message(content=f"renamed to {self.name.component.value}")


async def test_a_click_opens_a_modal_whose_submission_updates_the_clicked_message(discord, bot):
    """Callback 9 opens the modal; its submit (type 5) carries what was typed, and a modal can't answer it."""

    async def post_with_button(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("a fox", view=ui.View(timeout=None).add_item(Reroll(2)))

    async def open_modal(interaction: dpy.Interaction, job: int) -> None:
        await interaction.response.send_modal(Rename())

    bot.on_imagine, bot.on_click = post_with_button, open_modal
    result = await (await discord.slash(discord.alice, "general", "imagine", prompt="a fox")).response_message()
    click = await discord.click(discord.alice, result, "Reroll")
    modal = await click.opened_modal()
    assert modal["title"] == "Rename" and modal["components"][0]["component"]["value"] == "a fox"
    assert (await click.acked()).type == 9 and click.messages == []

    with pytest.raises(StandinError, match="takes 0..50 characters"):
        await discord.submit_modal(click, {"name": "x" * 51})  # the client stops the user, as Discord's does
    submit = await discord.submit_modal(click, {"name": "a cat"})
    typed = submit.payload["data"]["components"][0]
    assert typed["type"] == 18 and typed["component"] | {"id": 0} == {"type": 4, "custom_id": "name", "value": "a cat",
                                                                      "id": 0}
    assert submit.payload["message"]["id"] == str(result.id)
    error = await bot.failure()
    assert isinstance(error, dpy.HTTPException) and (error.status, error.code) == (400, 50035)
    await discord.wait_until(lambda: result.content == "renamed to a cat")
    assert (await submit.acked()).type == 7
    with pytest.raises(StandinError, match="already submitted"):
        await discord.submit_modal(click)


async def test_a_modal_over_discords_limits_is_refused_with_invalid_form_body(discord, bot):
    """A 46-character title or a pre-filled value over 4000 characters gets 400 / 50035 naming the field."""

    async def too_big(interaction: dpy.Interaction) -> None:
        title = interaction.namespace.prompt
        modal = ui.Modal(title="t" * 46 if title == "title" else "ok")
        size = 4001 if title == "value" else 10
        modal.add_item(ui.Label(text="Text", component=ui.TextInput(default="v" * size)))
        await interaction.response.send_modal(modal)

    bot.on_imagine = too_big
    for field in ("title", "value"):
        run = await discord.slash(discord.alice, "general", "imagine", prompt=field)
        error = await bot.failure()
        assert isinstance(error, dpy.HTTPException) and (error.status, error.code) == (400, 50035)
        assert field in str(error) and run.ack is None and run.modal is None


async def test_a_select_on_an_ephemeral_panel_updates_it_in_place_for_its_member_only(discord, bot):
    """Picking in a string select of an ephemeral message sends its values; only its member can see or use it."""
    picked: list[list[str]] = []

    class Aspect(ui.Select):
        def __init__(self) -> None:
            super().__init__(custom_id="tiny:aspect", placeholder="Aspect",
                             options=[dpy.SelectOption(label=a, value=a) for a in ("1:1", "16:9")])

        async def callback(self, interaction: dpy.Interaction) -> None:
            picked.append(self.values)
            await interaction.response.edit_message(content=f"aspect {self.values[0]}")

    async def panel(interaction: dpy.Interaction) -> None:
        await interaction.response.send_message("aspect 1:1", ephemeral=True, view=ui.View().add_item(Aspect()))

    bot.on_imagine = panel
    shown = await (await discord.slash(discord.alice, "general", "imagine", prompt="settings")).response_message()
    with pytest.raises(StandinError, match="only the member it was shown to"):
        await discord.select(discord.bob, shown, "Aspect", ["16:9"])
    with pytest.raises(StandinError, match="takes 1..1 of"):
        await discord.select(discord.alice, shown, "Aspect", ["4:3"])
    pick = await discord.select(discord.alice, shown, "Aspect", ["16:9"])
    assert (await pick.acked()).type == 7
    await discord.wait_until(lambda: shown.content == "aspect 16:9")
    assert picked == [["16:9"]] and shown.ephemeral and shown.edits == 1


async def test_busy_posts_answer_a_shared_429_then_let_the_post_through(discord):
    """With busy_posts = 1 the next channel post gets Discord's 429 body and headers; the retry is posted."""
    url = f"{discord.api_base}/channels/{discord.channel('general').id}/messages"
    headers = {"Authorization": f"Bot {discord.token}"}
    discord.busy_posts = 1
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(url, json={"content": "hello"}) as refused:
            body = await refused.json()
            assert refused.status == 429 and refused.headers["X-RateLimit-Scope"] == "shared"
            assert body["retry_after"] == 0.01 and body["global"] is False
        async with session.post(url, json={"content": "hello"}) as posted:
            assert posted.status == 200
    assert [m.content for m in discord.messages("general")] == ["hello"]
