"""What a test's users do in the stand-in: post, run slash and context-menu commands, click buttons, pick in selects,
submit modals, react, and click with a forged custom_id as a modified client can."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from .components import modal_submit_data, select_data
from .gateway import DIRECT_MESSAGE_REACTIONS_INTENT, GUILD_MESSAGE_REACTIONS_INTENT
from .interactions import Interaction, StandinError
from .mentions import resolve as resolve_mentions
from .model import (
    ADD_REACTIONS, ADMINISTRATOR, READ_MESSAGE_HISTORY, USE_APPLICATION_COMMANDS,
    Attachment, Channel, Guild, Member, Message, Role, User,
)

OPTION_TYPES = {1: "subcommand", 2: "subcommand group", 3: "string", 4: "integer", 5: "boolean", 6: "user",
                7: "channel", 8: "role", 9: "mentionable", 10: "number", 11: "attachment"}


class UserActions:
    """What a test's users do; mixed into `DiscordStandin` (server.py), whose world and gateway it uses."""

    # -- user actions ------------------------------------------------------------------------------------------

    async def say(self, user: str | User | Member, channel: str | Channel, content: str) -> Message:
        """A user posts a plain message in a channel."""
        user, channel = self.user(user), self.channel(channel)
        data = self._message_dict(channel, author=user, content=content)
        guild = self.guild_of(channel)
        mentions = resolve_mentions(content, None, guild=guild, known_users={u.id for u in self.users},
                                    author_permissions=self.permissions(user, channel) if guild else 0)
        self._set_mentions(data, mentions)
        message = Message(data, [])
        message.pinged = mentions.pinged(guild, user.id)
        await self._store_new_message(message, channel)
        return message

    async def slash(self, user: str | User | Member, channel: str | Channel, command: str, /,
                    **options: Any) -> Interaction:
        """A user runs a slash command: `slash(alice, "general", "imagine", prompt="a fox")`.

        `command` may be a space-separated path into subcommands ("limits set"); options take Python values
        (users, channels and roles as the stand-in's objects, attachments as (filename, bytes)).
        """
        channel = self.channel(channel)
        guild = self.guild_of(channel)
        if guild is None:
            raise StandinError("slash commands in DMs are not supported by the stand-in")
        member = self.member(user, guild)
        parts = command.lstrip("/").split()
        definition, guild_scoped = await self._synced_command(parts[0], guild)
        self._check_can_use(member, channel, definition)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {"id": definition["id"], "name": definition["name"], "type": 1}
        if guild_scoped:
            data["guild_id"] = str(guild.id)
        container, level = data, definition
        for i, part in enumerate(parts[1:], start=1):
            sub = next((o for o in level.get("options", []) if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                names = [o["name"] for o in level.get("options", []) if o["type"] in (1, 2)]
                raise StandinError(f"/{' '.join(parts[:i])} has no subcommand {part!r}; it has {names}")
            entry = {"name": sub["name"], "type": sub["type"], "options": []}
            container.setdefault("options", []).append(entry)
            container, level = entry, sub
        groups = [o["name"] for o in level.get("options", []) if o["type"] in (1, 2)]
        if groups:
            raise StandinError(f"/{command} is a group; pick one of its subcommands: {groups}")
        values = self._option_values(command, level.get("options", []), options, resolved, channel, member)
        if values or container is not data:
            container["options"] = values
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(2, member, channel, data)

    async def click(self, user: str | User | Member, message: Message, button: str) -> Interaction:
        """A user clicks a button on a message, found by its label, emoji or custom_id."""
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        candidates = message.buttons
        chosen = next((b for b in candidates if button in (b.get("label"), b.get("custom_id"),
                                                           (b.get("emoji") or {}).get("name"))), None)
        if chosen is None:
            shown = [b.get("label") or (b.get("emoji") or {}).get("name") or b.get("custom_id") for b in candidates]
            raise StandinError(f"no button {button!r} on message {message.id}; its buttons: {shown}")
        if chosen.get("disabled"):
            raise StandinError(f"button {button!r} on message {message.id} is disabled; a user cannot click it")
        self._check_can_see(member, message)
        if "custom_id" not in chosen:
            raise StandinError(f"button {button!r} is a link button (style {chosen.get('style')}); it opens a URL")
        data: dict[str, Any] = {"custom_id": chosen["custom_id"], "component_type": 2}
        if "id" in chosen:
            data["id"] = chosen["id"]
        return await self._dispatch_interaction(3, member, channel, data, source=message)

    async def react(self, user: str | User | Member, message: Message, emoji: str) -> None:
        """A user adds a (unicode) emoji reaction to a message: the message counts it, and a bot with the reactions
        intent gets MESSAGE_REACTION_ADD on the shard of the message's server."""
        user, channel = self.user(user), self.channel(message.channel_id)
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} cannot be reacted to (deleted or ephemeral)")
        guild = self.guild_of(channel)
        member = self.member(user, guild) if guild is not None else None
        if member is not None and ~self.permissions(member, channel) & (ADD_REACTIONS | READ_MESSAGE_HISTORY):
            raise StandinError(f"{user.name} may not add reactions in #{channel.name}")
        reactions = message.data.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"]["name"] == emoji), None)
        if entry is None:
            entry = {"count": 0, "count_details": {"burst": 0, "normal": 0}, "me": False, "me_burst": False,
                     "emoji": {"id": None, "name": emoji}, "burst_colors": []}
            reactions.append(entry)
        entry["count"] += 1
        entry["count_details"]["normal"] += 1
        entry["me"] = entry["me"] or user.id == self.bot_user.id
        data: dict[str, Any] = {"user_id": str(user.id), "channel_id": str(channel.id), "message_id": str(message.id),
                                "emoji": {"id": None, "name": emoji}, "message_author_id": str(message.author_id),
                                "burst": False, "burst_colors": [], "type": 0}
        if guild is not None and member is not None:
            data["guild_id"] = str(guild.id)
            data["member"] = member.to_dict()
        await self._notify()
        intent = DIRECT_MESSAGE_REACTIONS_INTENT if guild is None else GUILD_MESSAGE_REACTIONS_INTENT
        await self._broadcast("MESSAGE_REACTION_ADD", data, channel, intent=intent)

    async def message_command(self, user: str | User | Member, message: Message, command: str) -> Interaction:
        """A user runs a message context-menu command (Apps → `command`) on a message: a type 3 command whose
        interaction data names the message (`target_id`) and carries it in `resolved.messages`."""
        channel = self.channel(message.channel_id)
        guild = self.guild_of(channel)
        if guild is None:
            raise StandinError("context-menu commands in DMs are not supported by the stand-in")
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} has no context menu (deleted or ephemeral)")
        member = self.member(user, guild)
        definition, guild_scoped = await self._synced_command(command, guild, kind=3)
        self._check_can_use(member, channel, definition)
        data: dict[str, Any] = {"id": definition["id"], "name": definition["name"], "type": 3,
                                "target_id": str(message.id),
                                "resolved": {"messages": {str(message.id): copy.deepcopy(message.data)}}}
        if guild_scoped:
            data["guild_id"] = str(guild.id)
        return await self._dispatch_interaction(2, member, channel, data)

    async def select(self, user: str | User | Member, message: Message, select: str, values: list[str]) -> Interaction:
        """A user picks `values` in a string select of a message, found by its custom_id or placeholder."""
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        self._check_can_see(member, message)
        chosen = next((s for s in message.selects if select in (s.get("custom_id"), s.get("placeholder"))), None)
        if chosen is None:
            shown = [s.get("placeholder") or s.get("custom_id") for s in message.selects]
            raise StandinError(f"no select {select!r} on message {message.id}; its selects: {shown}")
        if chosen.get("disabled"):
            raise StandinError(f"select {select!r} on message {message.id} is disabled; a user cannot use it")
        return await self._dispatch_interaction(3, member, channel, select_data(chosen, values), source=message)

    async def submit_modal(self, opened_by: Interaction, values: dict[str, str] | None = None) -> Interaction:
        """The user who got a modal (callback type 9) fills it in and submits it: a MODAL_SUBMIT interaction.

        `values` maps text input custom_ids to what the user typed; the others keep their pre-filled values.
        Discord includes the message whose button opened the modal, so the bot may answer with an update (7).
        """
        if opened_by.modal is None:
            raise StandinError(f"interaction {opened_by.describe()} did not open a modal (ack: {opened_by.ack})")
        if opened_by.modal_submitted:
            raise StandinError("that modal was already submitted; it closed")
        data = modal_submit_data(opened_by.modal, values or {})
        opened_by.modal_submitted = True
        return await self._dispatch_interaction(5, opened_by.member, opened_by.channel, data,
                                                source=opened_by.source_message)

    def _check_can_see(self, member: Member, message: Message) -> None:
        """Only the member an ephemeral message was shown to can see it, so only they can use its components."""
        if message.deleted:
            raise StandinError(f"message {message.id} was deleted; nobody can use its components")
        if message.ephemeral and (message.interaction is None or message.interaction.user.id != member.user.id):
            raise StandinError(f"message {message.id} is ephemeral: only the member it was shown to can see it")

    async def forge_click(self, user: str | User | Member, message: Message, custom_id: str) -> Interaction:
        """A modified client sends a button click with a custom_id of its choosing, which the message needn't carry.

        Official Discord clients cannot do this: they only send the custom_id of a button the message shows. Discord
        itself does not check the custom_id, so a bot must not trust it: this is how a test plays that attacker.
        The interaction's `message` is still the real clicked message, as Discord fills it in.
        """
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} cannot be clicked (deleted or ephemeral)")
        return await self._dispatch_interaction(3, member, channel, {"custom_id": custom_id, "component_type": 2},
                                                source=message)

    async def _synced_command(self, name: str, guild: Guild, timeout: float = 5.0,
                              kind: int = 1) -> tuple[dict[str, Any], bool]:
        """A synced command of this kind (1 slash, 2 user menu, 3 message menu) by name: the server's, else global."""
        def lookup() -> tuple[dict[str, Any], bool] | None:
            for cmd in self.guild_commands.get(guild.id, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd, True
            for cmd in self.global_commands:
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd, False
            return None

        def synced_names() -> list[str]:
            return sorted({c["name"] for c in [*self.global_commands, *self.guild_commands.get(guild.id, [])]})

        await self._wait(lambda: lookup() is not None, timeout,
                         lambda: f"/{name} is not synced (waited {timeout}s); synced commands: {synced_names()}")
        found = lookup()
        assert found is not None
        return found

    def _check_can_use(self, member: Member, channel: Channel, definition: dict[str, Any]) -> None:
        perms = self.permissions(member, channel)
        if not perms & USE_APPLICATION_COMMANDS:
            raise StandinError(f"{member.name} may not use application commands in #{channel.name}")
        needed = definition.get("default_member_permissions")
        if self.enforce_default_permissions and needed is not None and not perms & ADMINISTRATOR:
            if int(needed) & ~perms:
                raise StandinError(
                    f"{member.name} cannot see /{definition['name']}: it needs permissions {needed}"
                    f" (default_member_permissions) and they have {perms};"
                    f" set discord.enforce_default_permissions = False to let them try anyway")
        if definition.get("nsfw") and not channel.nsfw:
            raise StandinError(f"/{definition['name']} is age-restricted; Discord offers it only in NSFW channels")

    def _option_values(self, command: str, defs: list[dict[str, Any]], given: dict[str, Any],
                       resolved: dict[str, dict[str, Any]], channel: Channel,
                       invoker: Member) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in defs}
        values = []
        for key, value in given.items():
            definition = by_name.get(key) or by_name.get(key.replace("_", "-"))
            if definition is None:
                raise StandinError(f"/{command} has no option {key!r}; its options: {list(by_name)}")
            values.append({"name": definition["name"], "type": definition["type"],
                           "value": self._option_value(command, definition, value, resolved, channel, invoker)})
        missing = [o["name"] for o in defs if o.get("required") and o["name"] not in {v["name"] for v in values}]
        if missing:
            raise StandinError(f"/{command} needs option(s) {missing}; Discord would not send it without them")
        return values

    def _option_value(self, command: str, definition: dict[str, Any], value: Any,
                      resolved: dict[str, dict[str, Any]], channel: Channel, invoker: Member) -> Any:
        kind, name = definition["type"], definition["name"]
        guild = self.guild_of(channel) or self.guild
        try:
            if kind == 3:
                value = str(value)
            elif kind == 4:
                if isinstance(value, bool) or int(value) != value:
                    raise ValueError(value)
                value = int(value)
            elif kind == 10:
                value = float(value)
            elif kind == 5:
                if not isinstance(value, bool):
                    raise ValueError(value)
            elif kind in (6, 9) and not isinstance(value, Role):
                user = self.user(value)
                resolved.setdefault("users", {})[str(user.id)] = user.to_dict()
                member = guild.member(user.id)
                if member is not None:
                    resolved.setdefault("members", {})[str(user.id)] = {
                        **member.to_dict(with_user=False),
                        "permissions": str(guild.permissions_for(member, channel))}
                return str(user.id)
            elif kind in (8, 9):
                role = value if isinstance(value, Role) else guild.role(str(value))
                resolved.setdefault("roles", {})[str(role.id)] = role.to_dict()
                return str(role.id)
            elif kind == 7:
                target = self.channel(value)
                resolved.setdefault("channels", {})[str(target.id)] = {
                    "id": str(target.id), "name": target.name, "type": target.type, "nsfw": target.nsfw,
                    "parent_id": None,
                    "permissions": str(guild.permissions_for(invoker, target))}
                return str(target.id)
            elif kind == 11:
                filename, blob = value
                attachment = Attachment.create(id=self._ids.next(), filename=filename, data=blob,
                                               base_url=self.base_url, channel_id=channel.id)
                resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_dict()
                self._option_attachments[attachment.id] = attachment  # Discord serves it at its url
                return str(attachment.id)
        except (TypeError, ValueError):
            raise StandinError(f"/{command} option {name!r} is a {OPTION_TYPES.get(kind, kind)};"
                               f" Discord would not accept {value!r}") from None
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise StandinError(f"/{command} option {name!r} must be one of {[c['value'] for c in choices]},"
                               f" got {value!r}")
        for bound, ok in (("min_value", lambda b: value >= b), ("max_value", lambda b: value <= b),
                          ("min_length", lambda b: len(value) >= b), ("max_length", lambda b: len(value) <= b)):
            if definition.get(bound) is not None and not ok(definition[bound]):
                raise StandinError(f"/{command} option {name!r} breaks {bound}={definition[bound]}: {value!r}")
        return value

    def _command_path(self, data: dict[str, Any]) -> str:
        path = [data.get("name", "?")]
        options = data.get("options", [])
        while options and options[0].get("type") in (1, 2):
            path.append(options[0]["name"])
            options = options[0].get("options", [])
        return " ".join(path)

    async def _dispatch_interaction(self, type: int, member: Member, channel: Channel, data: dict[str, Any],
                                    source: Message | None = None) -> Interaction:
        await self._wait(lambda: self._connection_for(channel.guild_id) is not None, 10.0,
                         lambda: f"no gateway connection (shard) owns server {channel.guild_id} within 10s;"
                                 f" shards connected: {self.shards}")
        conn = self._connection_for(channel.guild_id)
        assert conn is not None
        interaction_id = self._ids.next()
        token = f"aW50ZXJhY3Rpb246{interaction_id}:{secrets.token_urlsafe(48)}"
        guild = self.guild_of(channel)
        assert guild is not None
        bot_member = guild.member(self.bot_user.id)
        assert bot_member is not None
        member_perms = guild.permissions_for(member, channel)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": type,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": {**channel.to_dict(), "permissions": str(member_perms)},
            "member": {**member.to_dict(), "permissions": str(member_perms)},
            "token": token,
            "version": 1,
            "app_permissions": str(guild.permissions_for(bot_member, channel)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
        }
        if source is not None:
            payload["message"] = copy.deepcopy(source.data)
        interaction = Interaction(self, id=interaction_id, token=token, type=type, member=member, channel=channel,
                                  data=data, payload=payload, source_message=source)
        self._interactions[interaction_id] = interaction
        self._interactions_by_token[token] = interaction
        interaction.dispatched_at = self.now()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return interaction
