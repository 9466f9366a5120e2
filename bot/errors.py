"""Domain errors. A `UserError`'s message is a finished sentence the bot shows to the user as an ephemeral reply;
the command tree's error handler turns it into one, and logs anything else with a traceback."""

import math
import unicodedata


def quoted(text: object, limit: int = 40) -> str:
    """Member input as a refusal repeats it: control characters dropped, backticks (code spans) made plain, clipped."""
    plain = "".join(c for c in str(text) if unicodedata.category(c) != "Cc").replace("`", "'")
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"


class UserError(Exception):
    """A refusal or failure whose message is a sentence shown to the Discord user (ephemeral)."""


class RateLimited(UserError):
    """The user made `limit` requests in this channel within the rolling hour; one frees at `retry_at` (unix time)."""

    def __init__(self, limit: int, retry_at: float):
        self.limit = limit
        self.retry_at = retry_at
        requests = "request" if limit == 1 else "requests"
        # <t:...:R> renders as "in 12 minutes"; rounded up so it never says "now" a moment too early.
        super().__init__(
            f"You've used your {limit} {requests} per hour in this channel. Try again <t:{math.ceil(retry_at)}:R>."
        )


class TooManyQueued(UserError):
    """The user already has `limit` jobs waiting (queued, not yet running) in this channel."""

    def __init__(self, limit: int):
        self.limit = limit
        jobs = "job" if limit == 1 else "jobs"
        super().__init__(
            f"You already have {limit} {jobs} waiting in this channel; wait for one to finish or /cancel one."
        )


class ImagesGone(UserError):
    """The images of a job were pruned (kept `days` days) or are missing from disk (`days` is None)."""

    def __init__(self, days: float | None = None):
        self.days = days
        if days is None:
            super().__init__("The images of this job are no longer available; run /imagine again.")
        else:
            super().__init__(f"The images of this job were cleaned up after {days:g} days; run /imagine again.")


class ImagesDeleted(ImagesGone):
    """The job's requester or a moderator deleted its images (❌ or "Delete image")."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        UserError.__init__(self, f"The images of job #{job_id} were deleted; run /imagine again.")
        self.days = None


class WorkersNotReady(UserError):
    """No GPU worker has answered since the bot started (IMAGINE_BACKEND=ray, the cluster down at start-up), so the
    bot doesn't know the model's defaults yet and can't turn a prompt into a job."""

    def __init__(self) -> None:
        super().__init__("The image workers haven't answered since I started, so I can't take new prompts yet; "
                         "nothing was queued. Please try again in a minute.")


class JobNotFound(UserError):
    """No job has the id `job_id`."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        super().__init__(f"I can't find job #{job_id}.")


class InvalidLimit(UserError, ValueError):
    """A moderator named an unknown limit or gave it a value of the wrong type or range; the message says which."""
