"""How Discord turns a message's `content` and the request's `allowed_mentions` into mentions and pings.

Discord's rules (https://discord.com/developers/docs/resources/message#allowed-mentions-object):

- Only `content` is parsed, never embeds: ``<@id>``, ``<@!id>``, ``<@&id>``, ``@everyone`` and ``@here``.
- Without `allowed_mentions` (the key absent) everything in the content is parsed: users, roles, everyone.
- With it, `parse` lists the kinds parsed from the content ("users", "roles", "everyone"); `users` and `roles`
  list the only ids that may be mentioned, and ids that are not in the content are ignored. ``parse: ["users"]``
  together with a non-empty `users` list (the same for roles) is a validation error; a falsy list is not.
  Each list holds at most 100 ids. `replied_user` (default false) decides whether a reply pings its author.
- @everyone and @here need MENTION_EVERYONE; so does a role that isn't mentionable.

A notification (a "ping") happens when a message is created, not when it is edited; the first follow-up that fills
a deferred "thinking..." response is its creation. An ephemeral message is seen by one member and pings nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .model import MENTION_EVERYONE, Guild

USER_MENTION = re.compile(r"<@!?([0-9]+)>")
ROLE_MENTION = re.compile(r"<@&([0-9]+)>")
EVERYONE_MENTION = re.compile(r"@(everyone|here)")
KINDS = ("everyone", "roles", "users")
MAX_IDS = 100


class MentionsRefused(Exception):
    """`allowed_mentions` breaks Discord's validation: becomes 400 Invalid Form Body on `field`."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


@dataclass(frozen=True)
class Mentions:
    """What a message mentions once `allowed_mentions` applies: `mentions`, `mention_roles`, `mention_everyone`."""

    users: tuple[int, ...] = ()
    roles: tuple[int, ...] = ()
    everyone: bool = False

    def pinged(self, guild: Guild | None, author_id: int) -> frozenset[int]:
        """The members this message notifies: mentioned users, holders of mentioned roles, everyone."""
        if guild is None:
            found = set(self.users)
        else:
            members = {m.user.id for m in guild.members}
            found = {user for user in self.users if user in members}
            found |= {m.user.id for m in guild.members if any(r.id in self.roles for r in m.roles)}
            if self.everyone:
                found |= members
        found.discard(author_id)
        return frozenset(found)


def _ids(allowed: dict[str, Any], key: str) -> set[int] | None:
    value = allowed.get(key)
    if not value:
        return None
    if not isinstance(value, list):
        raise MentionsRefused(f"allowed_mentions.{key}", "BASE_TYPE_ARRAY", "Must be an array.")
    if len(value) > MAX_IDS:
        raise MentionsRefused(f"allowed_mentions.{key}", "BASE_TYPE_MAX_LENGTH",
                              f"Must be {MAX_IDS} or fewer in length.")
    try:
        return {int(v) for v in value}
    except (TypeError, ValueError):
        raise MentionsRefused(f"allowed_mentions.{key}", "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None


def resolve(content: str, allowed: dict[str, Any] | None, *, guild: Guild | None, author_permissions: int,
            replied_to: int | None = None, known_users: set[int] | None = None) -> Mentions:
    """Apply Discord's allowed-mentions rules to `content`; `replied_to` is the author of the message replied to."""
    if allowed is not None and not isinstance(allowed, dict):
        raise MentionsRefused("allowed_mentions", "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    if allowed is None:
        parse, users, roles, replied = set(KINDS), None, None, True
    else:
        parse = allowed.get("parse") or []
        if not isinstance(parse, list) or any(kind not in KINDS for kind in parse):
            raise MentionsRefused("allowed_mentions.parse", "BASE_TYPE_CHOICES",
                                  'Value must be one of {"everyone", "roles", "users"}.')
        parse = set(parse)
        users, roles = _ids(allowed, "users"), _ids(allowed, "roles")
        for kind, ids in (("users", users), ("roles", roles)):
            if kind in parse and ids:
                raise MentionsRefused("allowed_mentions", "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                                      f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.')
        replied = bool(allowed.get("replied_user"))

    found_users: list[int] = []
    for match in USER_MENTION.finditer(content or ""):
        user = int(match.group(1))
        if user in found_users or (known_users is not None and user not in known_users):
            continue
        if "users" in parse or (users is not None and user in users):
            found_users.append(user)
    if replied and replied_to is not None and replied_to not in found_users:
        found_users.append(replied_to)

    may_ping_all = bool(author_permissions & MENTION_EVERYONE)
    found_roles: list[int] = []
    if guild is not None:
        by_id = {role.id: role for role in guild.roles if role.id != guild.id}
        for match in ROLE_MENTION.finditer(content or ""):
            role = by_id.get(int(match.group(1)))
            if role is None or role.id in found_roles or not (role.mentionable or may_ping_all):
                continue
            if "roles" in parse or (roles is not None and role.id in roles):
                found_roles.append(role.id)
    everyone = (guild is not None and "everyone" in parse and may_ping_all
                and EVERYONE_MENTION.search(content or "") is not None)
    return Mentions(tuple(found_users), tuple(found_roles), everyone)
