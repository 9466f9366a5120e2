"""What a test holds after a user runs a slash command or clicks a button: the interaction as Discord tracks it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .model import Channel, Member, Message

if TYPE_CHECKING:
    from .server import DiscordStandin


class StandinError(AssertionError):
    """A test asked the stand-in for something a Discord user could not do, or a wait ran out."""


@dataclass(frozen=True)
class Ack:
    """The interaction's first response: its callback type (4 message, 5 deferred, 6 deferred update, 7 update,
    9 modal)."""

    type: int
    elapsed: float  # seconds between dispatch and the response

    @property
    def deferred(self) -> bool:
        return self.type in (5, 6)


class Interaction:
    """One interaction, from dispatch to its last follow-up."""

    def __init__(self, standin: "DiscordStandin", *, id: int, token: str, type: int, member: Member,
                 channel: Channel, data: dict[str, Any], payload: dict[str, Any],
                 source_message: Message | None = None) -> None:
        self._standin = standin
        self.id = id
        self.token = token
        self.type = type
        self.member = member
        self.user = member.user
        self.channel = channel
        self.data = data
        self.payload = payload
        self.source_message = source_message  # the message whose button was clicked
        self.created_at = standin.now()
        self.dispatched_at: float | None = None
        self.ack: Ack | None = None
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.refusals: list[dict[str, Any]] = []  # Discord errors this interaction's requests got
        self.source_edited = False  # whether this interaction has edited the clicked message
        self.modal: dict[str, Any] | None = None  # the modal the bot opened in answer (callback type 9)
        self.modal_submitted = False

    # -- what a test asks --------------------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def custom_id(self) -> str | None:
        return self.data.get("custom_id")

    @property
    def messages(self) -> list[Message]:
        """The original response (if any) and every follow-up, oldest first."""
        # After a click answered with a (deferred) update, @original is the clicked message: it counts as this
        # interaction's message only once the interaction has edited it.
        untouched_source = self.original is self.source_message and not self.source_edited
        found = [self.original] if self.original is not None and not untouched_source else []
        found += [m for m in self.followups if m is not self.original]
        return [m for m in found if not m.deleted]

    @property
    def ephemeral(self) -> bool:
        """Whether the response the user sees is ephemeral (only they can see it)."""
        if self.original is not None:
            return self.original.ephemeral
        return bool(self.followups and self.followups[0].ephemeral)

    @property
    def expired(self) -> bool:
        return self._standin.now() - self.created_at >= self._standin.token_lifetime

    async def acked(self, timeout: float = 5.0) -> Ack:
        """Wait for the first response to this interaction and return it."""
        await self._standin._wait(lambda: self.ack is not None, timeout,
                                  lambda: f"interaction {self.describe()} was not acknowledged within {timeout}s"
                                          f"{self._refusal_note()}")
        assert self.ack is not None
        return self.ack

    async def opened_modal(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the bot to answer with a modal (callback type 9) and return the modal it sent."""
        ack = await self.acked(timeout)
        if self.modal is None:
            raise StandinError(f"interaction {self.describe()} was answered with type {ack.type}, not a modal"
                               f"{self._refusal_note()}; its messages: {self.messages}")
        return self.modal

    async def response_message(self, timeout: float = 5.0) -> Message:
        """Wait for the original response message (after a defer: the placeholder that gets filled in later)."""
        await self._standin._wait(lambda: self.original is not None and not self.original.deleted, timeout,
                                  lambda: f"interaction {self.describe()} has no response message after {timeout}s"
                                          f" (ack: {self.ack}){self._refusal_note()}")
        assert self.original is not None
        return self.original

    async def wait_for(self, predicate: Callable[[Message], bool] = lambda m: True, timeout: float = 5.0) -> Message:
        """Wait until one of this interaction's messages satisfies the predicate (checked on every create/edit)."""
        found: list[Message] = []

        def check() -> bool:
            for message in self.messages:
                if not message.loading and predicate(message):
                    found.append(message)
                    return True
            return False

        await self._standin._wait(check, timeout,
                                  lambda: f"no message of interaction {self.describe()} matched within {timeout}s;"
                                          f" its messages: {self.messages}{self._refusal_note()}")
        return found[0]

    def describe(self) -> str:
        what = {2: f"/{self._standin._command_path(self.data)}", 5: f"modal {self.custom_id!r} submitted"}.get(
            self.type, f"click {self.custom_id!r}")
        return f"{what} by {self.user.name} in #{self.channel.name}"

    def _refusal_note(self) -> str:
        return f"; Discord refused: {self.refusals}" if self.refusals else ""

    def __repr__(self) -> str:
        return f"<Interaction {self.describe()} ack={self.ack}>"


async def wait_condition(condition: asyncio.Condition, predicate: Callable[[], bool], timeout: float,
                         describe: Callable[[], str]) -> None:
    async with condition:
        try:
            await asyncio.wait_for(condition.wait_for(predicate), timeout)
        except TimeoutError:
            raise StandinError(describe()) from None
