"""IMAGINE_BACKEND=ray: the backend (bot/backend.py) that hands calls to Ray Serve replicas, one per GPU.

The bot connects to the cluster named by RAY_ADDRESS, attaches to the Serve application of engine/serve.py (or
deploys it with IMAGINE_RAY_REPLICAS replicas), and streams each call: progress to the job's message as it comes,
the result as the job's PNG bytes. capacity() is the number of replicas running now, read every few seconds, so
the runner never sends more calls than there are free replicas and Serve never holds a backlog.

This module imports ray but never torch: a bot host without a GPU needs only `pip install '.[ray]'`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from dataclasses import asdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import ray
from ray import serve
from ray.exceptions import (ActorDiedError, ActorUnavailableError, NodeDiedError, RayError, RayTaskError,
                            TaskCancelledError, WorkerCrashedError)

from bot.backend import ProgressCallback
from bot.config import RaySettings
from bot.store import Store
from engine import JobCancelled, JobFailed, JobLost, Progress, Request, Result
from engine.jobs import ModelDefaults
from engine.protocol import VERSION, About, Call, Done, Failed, Started, Step
from engine.serve import APP, DEPLOYMENT, application
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0  # seconds before the second try to reach the cluster; doubled after each failure ...
LAST_RETRY = 60.0  # ... up to this
CAPACITY_EVERY = 5.0  # seconds between reads of how many replicas are running
STATUS_TIMEOUT = 20.0  # a status read that takes longer counts as the cluster unreachable
PROBE_TIMEOUT = 5.0  # seconds to open a TCP connection to the head before ray.init
FIRST_TRY_WAIT = 15.0  # seconds start() waits for the first try before the bot goes on to Discord
ABOUT_KEY = "ray.about"  # meta key of the last About a replica gave


@dataclass(eq=False)
class _Job:
    job_id: int
    on_progress: ProgressCallback | None
    future: asyncio.Future


@dataclass(eq=False)
class _Call:
    jobs: list[_Job]
    response: object = None  # serve's DeploymentResponseGenerator
    task: asyncio.Task | None = None
    pid: int | None = None  # the replica's process, once it started the call
    cancelled: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RayBackend:
    """Runs calls on the replicas of the Serve application engine.serve.APP; see bot/backend.py for the contract."""

    def __init__(self, settings: RaySettings, engine: EngineSettings, memory: Store | None = None) -> None:
        self.settings = settings
        self.engine_settings = engine
        self._memory = memory  # where the replicas' About is remembered across restarts
        self._connector: asyncio.Task | None = None
        self._tried = asyncio.Event()  # the first try to reach the cluster is over, either way
        self._handle = None
        self._capacity = 0
        self._reachable = True
        self._watcher: asyncio.Task | None = None
        self._calls: dict[int, _Call] = {}  # by job id, for the jobs in flight
        self._connected_here = False  # this backend called ray.init (so stop() disconnects)
        self.defaults = self.device = self.dtype = None
        self.models: dict = {}
        self.loras: tuple[str, ...] = ()
        self._loaded: dict[int | None, tuple[str, ...]] = {}  # replica pid (None: the one describe() reached) -> models
        self.max_batch = 1
        self.fast_path: str | None = None

    @property
    def address(self) -> str:
        return self.settings.address or "auto"

    # -- life cycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Try the cluster once (up to FIRST_TRY_WAIT: a deploy may take minutes), then go on connecting in the
        background: the bot is on Discord either way, with capacity() 0 until a replica has answered, so jobs stay
        queued and their messages say the workers can't be reached.

        The defaults remembered from the last run's replicas (in the store's meta table) are offered until then,
        so members can still queue new prompts while the cluster is down; a first run has none (offered())."""
        if self._memory is not None:
            self._adopt(_about_from_json(await self._memory.get_meta(ABOUT_KEY)))
        self._connector = asyncio.create_task(self._reach(), name="imagine-ray-connect")
        tried = asyncio.create_task(self._tried.wait())
        try:
            await asyncio.wait({self._connector, tried}, timeout=FIRST_TRY_WAIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tried.cancel()

    async def wait_ready(self) -> None:
        """Until a replica has answered and calls can be submitted (tests; the runner just reads capacity())."""
        await asyncio.shield(self._connector)

    async def _reach(self) -> None:
        """Connect (retrying with backoff, one line per try, while the cluster can't be reached), deploy or attach
        to the application, and learn the model's defaults from a replica."""
        delay = FIRST_RETRY
        while True:
            try:
                await _in_thread(self._connect)
                about = await self._handle.describe.remote()
                if about.version != VERSION:
                    raise ConnectionError(f"its replicas speak protocol {about.version}, this bot {VERSION}: run the "
                                          "same imagine-bot version on the bot and on the Ray cluster")
                break
            except (ConnectionError, RayError, TimeoutError) as error:
                log.warning("Can't reach the Ray cluster at %s (%s); trying again in %g s.", self.address,
                            _reason(error), delay)
                self._tried.set()
                await asyncio.sleep(delay)
                delay = min(2 * delay, LAST_RETRY)
        self._adopt(about)
        if self._memory is not None:
            await self._memory.set_meta(ABOUT_KEY, _about_to_json(about))
        self._capacity = await asyncio.to_thread(self._running_replicas)
        self._watcher = asyncio.create_task(self._watch(), name="imagine-ray-capacity")
        self._tried.set()
        log.info("Ray backend ready: %d replica(s) of %s at %s", self._capacity, APP, self.address)

    def _adopt(self, about: About | None) -> None:
        if about is not None:
            self.defaults, self.device, self.dtype = about.defaults, about.device, about.dtype
            self.max_batch, self.fast_path = about.max_batch, about.fast_path
            self.models = ({defaults.name: defaults for defaults in about.models}
                           or {about.defaults.name: about.defaults})
            self.loras = tuple(about.loras)
            self._loaded = {None: tuple(about.loaded)}

    def _connect(self) -> None:
        if not ray.is_initialized():
            _probe(self.address)
            self._connected_here = True
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=False)
        try:
            running = self._running_replicas()
        except KeyError:  # no application yet
            running = 0
        if running == self.settings.replicas:
            self._handle = serve.get_app_handle(APP)
            return
        # Deploy (or resize): serve.run returns once the replicas have loaded the model.
        serve.start(proxy_location="Disabled")
        log.info("Deploying %d replica(s) of %s on the Ray cluster at %s", self.settings.replicas, APP, self.address)
        self._handle = serve.run(
            application(self.engine_settings, replicas=self.settings.replicas, gpus=self.settings.gpus,
                        torch_threads=self.settings.torch_threads, shutdown_timeout=self.settings.shutdown_timeout),
            name=APP, route_prefix=None,
        )

    def _running_replicas(self) -> int:
        deployment = serve.status().applications[APP].deployments[DEPLOYMENT]
        return sum(count for state, count in deployment.replica_states.items() if state == "RUNNING")

    async def stop(self) -> None:
        """Cancel the calls in flight (their jobs go back to the queue at the next start) and disconnect; the
        replicas stay up for the next start. A connection still being tried is abandoned at once."""
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
            return  # its thread may still be inside ray.init: a daemon thread, which the exit leaves behind
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        calls = list({id(call): call for call in self._calls.values()}.values())
        for call in calls:
            for job in call.jobs:
                _settle(job, error=JobCancelled(f"job {job.job_id} was cancelled: the bot is stopping"))
            self._cancel_call(call)
        await asyncio.gather(*(call.task for call in calls if call.task), return_exceptions=True)
        if self._connected_here and ray.is_initialized():
            await asyncio.to_thread(ray.shutdown)

    async def _watch(self) -> None:
        """Read the running replicas every CAPACITY_EVERY seconds; say once when none can be used, and once when
        they are back."""
        while True:
            await asyncio.sleep(CAPACITY_EVERY)
            try:
                self._capacity = await asyncio.wait_for(asyncio.to_thread(self._running_replicas), STATUS_TIMEOUT)
                why = f"no replica of {APP} is running"
            except Exception as error:  # noqa: BLE001 - unreachable, or the application was deleted
                self._capacity, why = 0, _reason(error)
            if self._capacity == 0 and self._reachable:
                log.warning("Lost the Ray cluster at %s (%s); jobs stay queued until it is back.", self.address, why)
                self._reachable = False
            elif self._capacity > 0 and not self._reachable:
                log.warning("The Ray cluster at %s is back: %d replica(s).", self.address, self._capacity)
                self._reachable = True

    # -- calls ------------------------------------------------------------------------------------------------

    def capacity(self) -> int:
        return self._capacity

    def loaded_models(self) -> tuple[str, ...]:
        """The models some replica has loaded, as each replica last said (most recently used first within each);
        Serve picks the replica, so a job for one of these may still meet a replica without it."""
        return tuple(dict.fromkeys(name for loaded in reversed(self._loaded.values()) for name in loaded))

    def submit_batch(self, jobs: Sequence[tuple[object, Request, ProgressCallback | None]]
                     ) -> list[Awaitable[Result]]:
        if self._handle is None:
            raise RuntimeError("await backend.start() before submitting jobs")
        if not jobs:
            raise ValueError("submit_batch needs at least one job")
        if len(jobs) > self.max_batch:
            raise ValueError(f"a call takes at most {self.max_batch} jobs (IMAGINE_MAX_BATCH), got {len(jobs)}")
        loop = asyncio.get_running_loop()
        call = _Call([_Job(job_id, on_progress, loop.create_future()) for job_id, _, on_progress in jobs])
        for job in call.jobs:
            self._calls[job.job_id] = call
        call.response = self._handle.options(stream=True).run.remote(
            Call(tuple((job_id, request) for job_id, request, _ in jobs)))
        call.task = asyncio.create_task(self._stream(call), name=f"imagine-ray-call-{call.jobs[0].job_id}")
        return [self._outcome(job) for job in call.jobs]

    async def _outcome(self, job: _Job) -> Result:
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.cancel(job.job_id)
            raise

    def cancel(self, job_id: object) -> bool:
        """Settle the job as cancelled now; when no job of its call is still wanted, cancel the call, which stops
        the replica's pipeline at its next step. False if the job isn't in flight here."""
        call = self._calls.get(job_id)
        if call is None:
            return False
        for job in call.jobs:
            if job.job_id == job_id:
                _settle(job, error=JobCancelled(f"job {job_id} was cancelled"))
        if all(job.future.done() for job in call.jobs):
            self._cancel_call(call)
        return True

    def _cancel_call(self, call: _Call) -> None:
        if not call.cancelled and call.response is not None:
            call.cancelled = True
            call.response.cancel()

    async def _stream(self, call: _Call) -> None:
        """Read the replica's stream to the end: progress to each job's callback, each job settled once."""
        jobs = {job.job_id: job for job in call.jobs}
        lost, died = "the replica's stream ended before the job did", True
        try:
            async for event in call.response:
                if isinstance(event, Started):
                    call.pid = event.pid
                    log.debug("jobs %s started on replica pid %d (%s)", list(jobs), event.pid, event.node)
                elif isinstance(event, Step):
                    job = jobs.get(event.job_id)
                    if job is not None and job.on_progress is not None and not job.future.done():
                        try:
                            job.on_progress(Progress(event.job_id, event.step, event.total, event.preview,
                                                     event.loading))
                        except Exception:
                            log.exception("on_progress callback for job %s raised", event.job_id)
                elif isinstance(event, Done):
                    self._loaded.pop(call.pid, None)  # the latest report goes last: reversed() above reads it first
                    self._loaded[call.pid] = event.loaded
                    _settle(jobs[event.job_id], result=event.result)
                elif isinstance(event, Failed):
                    error = JobCancelled(event.message) if event.cancelled else JobFailed(event.message)
                    _settle(jobs[event.job_id], error=error)
        except (asyncio.CancelledError, TaskCancelledError):
            lost = "the call was cancelled"
            for job in call.jobs:
                _settle(job, error=JobCancelled(f"job {job.job_id} was cancelled"))
        except RayTaskError as error:  # the replica's code raised (e.g. a protocol mismatch): another try won't do
            log.error("Ray replica refused jobs %s: %s", list(jobs), error.cause)
            for job in call.jobs:
                _settle(job, error=JobFailed("Something went wrong on my side while making this; please try again."))
        except (ActorDiedError, ActorUnavailableError, NodeDiedError, WorkerCrashedError) as error:
            lost = f"its replica went away ({_reason(error)})"  # killed, out of host memory, its machine lost
            self._loaded.pop(call.pid, None)  # and its models with it
        except (RayError, ConnectionError) as error:  # the cluster can't be reached: nothing known about the job
            lost, died = f"the Ray cluster at {self.address} can't be reached ({_reason(error)})", False
        finally:
            for job in call.jobs:
                _settle(job, error=JobLost(f"job {job.job_id}: {lost}", worker_died=died))
                if self._calls.get(job.job_id) is call:
                    del self._calls[job.job_id]


def _settle(job: _Job, *, result: Result | None = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


async def _in_thread(fn):
    """fn() in a daemon thread of its own: unlike asyncio.to_thread, a stop never waits for a ray.init or a deploy
    that may take minutes (asyncio.run joins the default executor's threads on the way out)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=work, name="imagine-ray-connect", daemon=True).start()
    return await future


def _about_to_json(about: About) -> str:
    return json.dumps(asdict(about))


def _about_from_json(text: str | None) -> About | None:
    """The remembered About, or None when there is none or it was written by another version of the protocol."""
    if not text:
        return None
    try:
        fields = json.loads(text)
        if fields.get("version") != VERSION:
            return None
        return About(**(fields | {"defaults": ModelDefaults(**fields["defaults"]),
                                  "models": tuple(ModelDefaults(**model) for model in fields.get("models", ())),
                                  "loras": tuple(fields.get("loras", ())), "loaded": ()}))  # loaded: not known now
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _probe(address: str) -> None:
    """Fail fast when nothing listens at a HOST:PORT address: ray.init itself waits minutes for an absent head."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", or a ray:// client address: leave it to ray.init
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {host}:{port}: {error.strerror or error}") from None


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
