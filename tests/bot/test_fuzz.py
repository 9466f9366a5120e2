"""End-to-end fuzz: random prompts, options and clicks from several members, through the real bot and the stand-in."""

from __future__ import annotations

import random

from bot.parsing import ASPECT_CHOICES, MAX_SEED
from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale

SEED = 20261201
COMMANDS = 24
# Routes whose payloads create or edit a message (for an interaction callback the message is in "data").
MESSAGE_ROUTES = (
    "/interactions/{interaction_id}/{interaction_token}/callback",
    "/webhooks/{webhook_id}/{webhook_token}",
    "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
    "/channels/{channel_id}/messages",
    "/channels/{channel_id}/messages/{message_id}",
)


def random_prompt(rng: random.Random, discord) -> str:
    """Words with what members paste into them (mentions, markdown, odd unicode), and now and then a flag or two."""
    moderator = discord.guild.role("Moderator")
    words = [
        "a red fox", "in snow", "lighthouse at dusk", "**bold**", "__under__", "`code`", "> quote", "# big",
        "||spoiler||", discord.alice.mention, f"<@!{discord.bob.id}>", moderator.mention, "@everyone", "@here",
        "<@123456789012345678>", "\u200b", "\u202eevil", "e\u0301", "🦊", "👩‍👩‍👧", "\x00", "日本語", "مرحبا", "--",
    ]
    flags = [
        "--ar 16:9", "--ar 3:2", "--ar 7x5", "--ar 10:1", "--seed 42", "--seed -1", "--seed 1e400", "--no text",
        "--no <@&1> @everyone", "--steps 2", "--steps 0", "--steps 999", "--steps x", "--guidance 6",
        "--guidance nan", "--cfg inf", "--chaos 9",
    ]
    prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.1:
        prompt += " word" * 300  # far over the 1000 characters a prompt may have
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        prompt += " " + rng.choice(flags)
    return prompt[:1500]


def random_options(rng: random.Random, discord) -> dict:
    options: dict = {"prompt": random_prompt(rng, discord)}
    if rng.random() < 0.3:
        options["negative"] = random_prompt(rng, discord)[:1000]
    if rng.random() < 0.3:
        options["aspect"] = rng.choice(ASPECT_CHOICES)
    if rng.random() < 0.3:
        options["seed"] = rng.choice([0, 42, MAX_SEED, rng.randrange(MAX_SEED)])
    if rng.random() < 0.3:
        options["steps"] = rng.choice([1, 2, 3, 60, 150])  # above the channel's 50 is refused
    if rng.random() < 0.3:
        options["guidance"] = rng.choice([0.0, 1.5, 7.0, 30.0])
    return options


def final(message) -> bool:
    return has_grid(message) or has_upscale(message) or "❌" in message.content or "🚫" in message.content


async def test_random_prompts_and_clicks_are_answered_in_time_and_never_ping_anyone(discord, bot):
    """Dozens of random commands and clicks: each acked within 3 s, the bot never breaks, nobody is pinged wrongly."""
    rng = random.Random(SEED)
    members = [discord.alice, discord.bob, discord.mod]
    interactions, expired = [], {}  # expired: interaction -> its job's headline, for tokens this test let run out

    def channel_messages():  # posted by the bot outside any interaction: results after a token expired
        return [m for c in ("general", "art") for m in discord.messages(c) if m.interaction is None]

    def settled(interaction) -> bool:
        if interaction.modal is not None or any(m.ephemeral or final(m) for m in interaction.messages):
            return True  # a modal (Custom Zoom) is an answer too: the member would fill it in or close it
        headline = expired.get(interaction)
        return headline is not None and any(final(m) and m.content.startswith(headline) for m in channel_messages())

    for n in range(COMMANDS):
        user, channel = rng.choice(members), rng.choice(["general", "art"])
        interactions.append(await discord.slash(user, channel, "imagine", **random_options(rng, discord)))
        await interactions[-1].acked()
        shown = [m for i in interactions for m in i.messages if m.buttons and not m.ephemeral]
        if n % 3 == 2 and shown:  # a real click on one of the buttons on screen, mostly a result's
            results = [m for m in shown if final(m)]
            message = rng.choice(results if results and rng.random() < 0.8 else shown)
            button = rng.choice(message.buttons)
            interactions.append(await discord.click(rng.choice(members), message, button["custom_id"]))
        if n % 5 == 4 and shown:  # a modified client's made-up custom_id
            custom_id = rng.choice([
                f"imagine:{rng.choice(['u', 'v', 'r', 'vs', 'vx', 'x'])}:{rng.choice([1, 7, 10**17, 10**30])}:"
                f"{rng.randint(0, 9)}", "imagine:u:0:1", "imagine::", "x" * 100, "🦊"])
            interactions.append(await discord.forge_click(rng.choice(members), rng.choice(shown), custom_id))
        waiting = [i for i in interactions if i not in expired and not settled(i) and i.original is not None
                   and any(b.get("label") == "Cancel" for b in i.original.buttons)]
        if n % 10 == 9 and waiting:  # a long queue: this member's token runs out before the result
            interaction = rng.choice(waiting)
            expired[interaction] = interaction.original.content.rsplit(" (", 1)[0]  # "**prompt** — <@member>"
            discord.expire_token(interaction)

    for interaction in interactions:
        await discord.wait_until(lambda: settled(interaction), GRID_TIMEOUT, f"{interaction} settled")
        assert (await interaction.acked()).elapsed < 3, interaction

    # Nobody was pinged but the member whose result came as a channel message after their token expired.
    for ping in discord.pings:
        assert ping.message.interaction is None, ping
        assert any(ping.message.content.startswith(h) and i.user is ping.user for i, h in expired.items()), ping
    for request in discord.requests:
        payload = request.json.get("data", request.json) if isinstance(request.json, dict) else None
        if request.route in MESSAGE_ROUTES and payload and payload.get("content"):  # only content can mention
            allowed = payload.get("allowed_mentions")
            assert allowed is not None and allowed["parse"] == [] and not allowed.get("roles"), request
            assert {int(u) for u in allowed.get("users", [])} <= {i.user.id for i in expired}, request
    assert any(has_grid(m) for i in interactions for m in i.messages), "the fuzz never made a picture"

    reply = await (await discord.slash(discord.alice, "general", "queue")).wait_for(lambda m: m.ephemeral)
    assert "jobs" in reply.content
