"""The Ray Serve side of IMAGINE_BACKEND=ray: one deployment whose replicas each own an Engine (one per GPU).

A replica's constructor loads the default model from the same EngineSettings the local engine uses (the other
configured models load on demand, as in the local engine); `run` makes one call
(a job or a batch, exactly what the local engine runs) and streams its progress and outcomes back
(engine/protocol.py). Serve holds no backlog: each replica takes one call at a time (max_ongoing_requests=1) and the
bot never sends more calls than replicas are running; the queue stays in the bot's SQLite store.

Cancelling the streaming call (the bot does when every job of the call is cancelled) raises CancelledError here,
which cancels the jobs in the Engine: the pipeline stops at its next step.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

from ray import serve

from engine.engine import Engine
from engine.jobs import JobCancelled, JobFailed
from engine.protocol import VERSION, About, Call, Done, Failed, Started, Step
from engine.settings import EngineSettings

APP = "imagine"  # the Serve application's name on the cluster
DEPLOYMENT = "ImagineReplica"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=1, max_queued_requests=-1)
class ImagineReplica:
    async def __init__(self, settings: EngineSettings, torch_threads: int | None = None) -> None:
        if torch_threads:  # CPU replicas sharing a machine: each keeps to its share of the cores
            import torch

            torch.set_num_threads(torch_threads)
        self.engine = Engine(settings)
        await self.engine.start()

    def describe(self) -> About:
        engine = self.engine
        return About(engine.defaults, engine.device, engine.dtype, engine.max_batch, engine.fast_path,
                     models=tuple(engine.models.values()), loras=engine.loras, loaded=engine.loaded_models())

    async def run(self, call: Call) -> AsyncIterator[Started | Step | Done | Failed]:
        if call.version != VERSION:
            raise ValueError(f"the bot speaks protocol {call.version}, this replica {VERSION}: "
                             "run the same imagine-bot version on the bot and on the Ray cluster")
        # 1. Queue the call in the engine; its progress and outcomes come back through one asyncio queue.
        events: asyncio.Queue[Step | Done | Failed] = asyncio.Queue()
        outcomes = self.engine.submit_batch([
            (job_id, request,
             lambda p, job_id=job_id: events.put_nowait(Step(job_id, p.step, p.total, p.preview, p.loading)))
            for job_id, request in call.jobs
        ])
        waiters = [asyncio.ensure_future(_settle(job_id, outcome, events, self.engine))
                   for (job_id, _), outcome in zip(call.jobs, outcomes)]
        # 2. Stream everything back until each job has its outcome.
        try:
            yield Started(os.getpid(), socket.gethostname())
            pending = len(waiters)
            while pending:
                event = await events.get()
                pending -= isinstance(event, (Done, Failed))
                yield event
        finally:  # the bot cancelled the call (or went away): stop the pipeline at its next step
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def __del__(self) -> None:
        await self.engine.stop()


async def _settle(job_id: int, outcome, events: asyncio.Queue, engine: Engine) -> None:
    try:
        result = await outcome
    except JobCancelled as e:
        events.put_nowait(Failed(job_id, str(e), cancelled=True))
    except JobFailed as e:
        events.put_nowait(Failed(job_id, str(e)))
    except Exception as e:  # the engine turns errors into JobFailed; this is the last guard
        events.put_nowait(Failed(job_id, f"Something went wrong while making the image ({type(e).__name__})."))
    else:
        events.put_nowait(Done(job_id, result, loaded=engine.loaded_models()))


def application(settings: EngineSettings, *, replicas: int, gpus: float, torch_threads: int | None,
                shutdown_timeout: float):
    """The Serve application: `replicas` replicas of `gpus` GPUs each (0: CPU replicas of one CPU, as in tests)."""
    actor = {"num_gpus": gpus} if gpus else {"num_cpus": 1}
    return ImagineReplica.options(
        num_replicas=replicas,
        ray_actor_options=actor,
        graceful_shutdown_timeout_s=shutdown_timeout,  # a redeploy lets the longest job finish
    ).bind(settings, torch_threads)
