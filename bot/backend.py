"""The seam between the runner and whatever makes the images: one small async interface, two implementations.

    engine.Engine            this process's pipeline, one call at a time (IMAGINE_BACKEND=local, the default)
    bot.ray_backend.Ray      Ray Serve replicas, one call in flight per replica (IMAGINE_BACKEND=ray)

bot/__main__.py picks one; nothing else in bot/ knows which it got. The queue stays in the store either way: a
backend is handed at most capacity() calls at once and never holds a backlog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Callable, Protocol

from bot.errors import WorkersNotReady
from engine import ModelDefaults, Progress, Request, Result

ProgressCallback = Callable[[Progress], None]


class Backend(Protocol):
    """Runs calls of one job, or of a batch of jobs with one batch key (engine/batching.py).

    submit_batch returns one awaitable per job, each settling on its own: its Result, or JobFailed (a sentence for
    the member), JobCancelled, or JobLost (the worker went away; the job goes back to the front of the queue).
    Progress comes to each job's callback on the event loop.
    """

    # What the bot offers members: steps, guidance, native size, model name. None until a worker has answered
    # (Ray replicas unreachable since start-up, with none remembered from an earlier run): see offered().
    defaults: ModelDefaults | None
    models: dict[str, ModelDefaults]  # every configured model by name, the default first
    loras: tuple[str, ...]  # the LoRA names jobs may use (IMAGINE_LORA_DIR's file stems), sorted
    device: str
    dtype: str
    max_batch: int  # most jobs one call takes
    fast_path: str | None  # what the opt-in fast-path settings did, for the ready line; None when none is on

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def capacity(self) -> int:
        """Calls that can run at once now (0 while no worker can be reached); read again before each claim."""

    def submit_batch(self, jobs: Sequence[tuple[object, Request, ProgressCallback | None]]
                     ) -> list[Awaitable[Result]]: ...

    def loaded_models(self) -> tuple[str, ...]:
        """The models on the device(s) now, most recently used first; a job for one of them starts without a load."""

    def cancel(self, job_id: object) -> bool:
        """Stop a job of a call in flight (at its next step); False if this backend doesn't have it."""


def offered(backend: Backend) -> ModelDefaults:
    """The model defaults new prompts are resolved with; a refusal (WorkersNotReady) while the backend knows none.

    Buttons without Remix don't need them (a follow-up copies its job's recipe), so those still queue meanwhile."""
    if backend.defaults is None:
        raise WorkersNotReady()
    return backend.defaults
