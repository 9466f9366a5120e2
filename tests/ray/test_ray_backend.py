"""IMAGINE_BACKEND=ray over a real local Ray cluster: two CPU replicas of the tiny model stand in for two GPUs.

One cluster (ray.init(num_cpus=2) here, with the Serve application deployed once) serves the whole module; the
bot end to end runs as its own process (`python -m bot`) that connects to it with RAY_ADDRESS, as a GPU-less bot
host would. Ray is shut down at the end of the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
import time
from pathlib import Path

import pytest

import ray
from ray import serve

from bot.config import RaySettings
from bot.ray_backend import RayBackend
from bot.store import Store
from engine import EngineSettings, JobCancelled, Request
from engine.serve import APP, DEPLOYMENT, application
from tests.bot.e2e import has_grid, has_upscale, picture

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
SLOW = 120  # a cold bot process, a replica reloading the model on a shared 2-core machine
REPLICAS = 2
ENGINE_ENV = {"IMAGINE_DEVICE": "cpu", "IMAGINE_SIZE": "64", "IMAGINE_STEPS": "4", "IMAGINE_PREVIEW_EVERY": "1"}


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tiny_model_two: Path):
    """A local Ray cluster of 2 CPUs with the application deployed: 2 replicas of 1 CPU and 1 torch thread each,
    configured with two models (the default `one`, and `two`), one loaded at a time."""
    # Replica processes import this checkout's engine/, not an installed copy.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=REPLICAS, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        settings = EngineSettings.from_env(ENGINE_ENV | {"IMAGINE_MODELS": f"one={tiny_model},two={tiny_model_two}"})
        serve.start(proxy_location="Disabled")
        serve.run(application(settings, replicas=REPLICAS, gpus=0, torch_threads=1, shutdown_timeout=30),
                  name=APP, route_prefix=None)
        yield {"address": ray.get_runtime_context().gcs_address, "engine": settings}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
async def backend(cluster):
    """The bot's Ray client, attached to the module's application (no redeploy)."""
    backend = RayBackend(RaySettings(address=cluster["address"], replicas=REPLICAS, gpus=0), cluster["engine"])
    await backend.start()
    await asyncio.wait_for(backend.wait_ready(), SLOW)
    yield backend
    await backend.stop()


def replica_pids() -> list[int]:
    """The replicas' worker processes of this module's cluster: by the title Ray gives them
    (ray::ServeReplica:<app>:<deployment>), among the descendants of this process (ray.init started the cluster's
    raylet, which starts the workers), so another cluster on the same machine is never counted or killed."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(f"ray::ServeReplica:{APP}:{DEPLOYMENT}".encode()):
                pid = int(cmdline.parent.name)
                if _descends_from_us(pid):
                    pids.append(pid)
        except OSError:  # gone meanwhile
            pass
    return pids


def _descends_from_us(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid, after the (command) field
    return False


def fox(steps: int, seed: int = 1) -> Request:
    return Request("imagine", "a red fox", width=64, height=64, steps=steps, seeds=(seed, seed + 1, seed + 2, seed + 3))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free, and nothing listens on it


async def test_an_unreachable_cluster_at_start_up_is_one_line_per_try_backing_off(caplog):
    """With nothing at RAY_ADDRESS, start() returns at once with no capacity, then says so in one readable line per
    try, waiting longer each time, never giving up; stop() ends the tries at once (runs first in this module,
    before its cluster exists)."""
    port = free_port()
    backend = RayBackend(RaySettings(address=f"127.0.0.1:{port}", gpus=0), EngineSettings())
    await asyncio.wait_for(backend.start(), SLOW)
    try:
        assert backend.capacity() == 0 and backend.defaults is None
        async with asyncio.timeout(SLOW):
            while len(tries := [r.getMessage() for r in caplog.records if "Can't reach the Ray" in r.getMessage()]) < 2:
                await asyncio.sleep(0.05)  # polling the log for the second line
    finally:
        await asyncio.wait_for(backend.stop(), SLOW)
    assert f"Can't reach the Ray cluster at 127.0.0.1:{port} (ConnectionError: nothing answers at" in tries[0]
    assert tries[0].endswith("trying again in 1 s.") and tries[1].endswith("trying again in 2 s.")
    assert backend.capacity() == 0
    assert not ray.is_initialized()


@contextlib.asynccontextmanager
async def bot_process(env: dict[str, str], log: Path):
    """`python -m bot` as its own process, as a GPU-less bot host runs it, writing to `log`; killed at the end if
    it is still running, and the log's tail printed (pytest shows it when the test failed)."""
    with log.open("ab") as out:
        bot = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=REPO, env=os.environ | env,
                                                   stdout=out, stderr=out)
    try:
        yield bot
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()
        print(log.read_text(errors="replace")[-5000:])


async def logged(log: Path, text: str) -> str:
    """The first line of the bot's log holding `text`, once it is there."""
    async with asyncio.timeout(SLOW):
        while not (lines := [line for line in log.read_text(errors="replace").splitlines() if text in line]):
            await asyncio.sleep(0.05)  # polling the log file for the line
    return lines[0]


async def stop_process(bot) -> int | None:
    """SIGTERM, as systemd would; the exit status (None if it had to be killed)."""
    if bot.returncode is None:
        bot.terminate()
        try:
            await asyncio.wait_for(bot.wait(), SLOW)
        except TimeoutError:
            bot.kill()
            await bot.wait()
            return None
    return bot.returncode


async def test_the_bot_starts_on_discord_while_the_cluster_is_down_and_refuses_prompts_it_cant_resolve(
        discord, bot_env, tmp_path):
    """`python -m bot` with IMAGINE_BACKEND=ray and nothing at RAY_ADDRESS: it connects to Discord anyway and says
    so in its ready line, keeps trying the cluster (one line per try), refuses /imagine privately while no replica
    has ever answered (it doesn't know the model's defaults), and a SIGTERM stops it at once."""
    log = tmp_path / "bot.log"
    env = bot_env | {"IMAGINE_BACKEND": "ray", "RAY_ADDRESS": f"127.0.0.1:{free_port()}", "IMAGINE_RAY_GPUS": "0"}
    async with bot_process(env, log) as bot:
        await discord.wait_for_connection(SLOW)
        ready = await logged(log, "imagine-bot ready")
        assert "ready: waiting for the image workers (no model known yet" in ready, ready
        run = await discord.slash(discord.alice, "general", "imagine", prompt="a lighthouse")
        refusal = await run.wait_for(lambda m: m.ephemeral, SLOW)
        assert "image workers haven't answered since I started" in refusal.content
        assert "nothing was queued" in refusal.content
        assert not [m for m in discord.messages("general") if not m.ephemeral]
        assert await stop_process(bot) == 0
    output = log.read_text(errors="replace")
    assert "Can't reach the Ray cluster at 127.0.0.1:" in output
    assert "Traceback" not in output


async def test_a_sigterm_stops_a_start_up_stuck_inside_ray_init(discord, bot_env, tmp_path):
    """Something at RAY_ADDRESS that accepts connections but never answers holds ray.init for minutes; a SIGTERM
    then stops `python -m bot` at once and cleanly (Ray's "SIGTERM handler is not set" notice is not shown)."""
    accepted = asyncio.Event()

    async def mute(reader, writer):
        accepted.set()
        await reader.read()  # never answers; the bot's end closes it

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    log = tmp_path / "bot.log"
    env = bot_env | {"IMAGINE_BACKEND": "ray", "IMAGINE_RAY_GPUS": "0",
                     "RAY_ADDRESS": f"127.0.0.1:{server.sockets[0].getsockname()[1]}"}
    async with server, bot_process(env, log) as bot:
        await asyncio.wait_for(accepted.wait(), SLOW)
        assert await stop_process(bot) == 0
    output = log.read_text(errors="replace")
    assert "Traceback" not in output and "SIGTERM handler is not set" not in output


async def run_together(backend, job_ids, steps):
    """Submit one call per job at once; each job's (time, step) progress, its end time, and the results."""
    progress = {job_id: [] for job_id in job_ids}
    ended = {}

    async def run(job_id):
        def on_progress(p):
            progress[job_id].append((time.monotonic(), p.step, p.preview))

        (outcome,) = backend.submit_batch([(job_id, fox(steps, seed=job_id * 10), on_progress)])
        result = await outcome
        ended[job_id] = time.monotonic()
        return result

    results = await asyncio.wait_for(asyncio.gather(*(run(job_id) for job_id in job_ids)), SLOW)
    return progress, ended, results


def overlap(progress, ended, a, b) -> bool:
    """Each job took its first step before the other ended."""
    return progress[a][0][0] < ended[b] and progress[b][0][0] < ended[a]


async def test_two_jobs_run_on_two_replicas_at_once_and_stream_their_progress(backend):
    """Two calls submitted together run at the same time (each starts before the other ends), each job's progress
    arrives step by step with previews, and each gets its own 2x2 grid."""
    assert backend.capacity() == REPLICAS

    progress, ended, results = await run_together(backend, (1, 2), steps=40)

    for job_id in (1, 2):
        assert [step for _, step, _ in progress[job_id]] == list(range(1, 41))
        assert any(preview for _, _, preview in progress[job_id])  # small JPEGs, as the local engine sends
    assert overlap(progress, ended, 1, 2)
    assert [r.seeds for r in results] == [(10, 11, 12, 13), (20, 21, 22, 23)]
    assert all(r.grid and r.grid.startswith(b"\x89PNG") for r in results)


async def test_a_cancel_stops_the_job_on_its_replica(backend):
    """Cancelling a running job settles it as cancelled at once, and its replica stops at the next step: right
    after, two new jobs again run at the same time, so the cancelled one's 150 steps no longer hold a replica."""
    started = asyncio.Event()
    seen: list[int] = []

    def on_progress(progress):
        seen.append(progress.step)
        started.set()

    (long,) = backend.submit_batch([(3, fox(150), on_progress)])
    long = asyncio.ensure_future(long)
    await asyncio.wait_for(started.wait(), SLOW)
    assert backend.cancel(3)
    with pytest.raises(JobCancelled):
        await long
    steps_at_cancel = len(seen)

    progress, ended, _ = await run_together(backend, (4, 5), steps=20)

    assert overlap(progress, ended, 4, 5)
    assert len(seen) == steps_at_cancel < 150  # no progress after the cancel


async def test_a_replica_loads_a_named_model_on_demand_and_says_so(backend):
    """The bot learns every model from a replica; a job for the second model streams its "loading" step first, is
    made by that model, and the backend then counts it among the loaded models."""
    assert list(backend.models) == ["one", "two"] and backend.defaults.name == "one"
    assert backend.loaded_models() == ("one",)
    progress = []
    (outcome,) = backend.submit_batch([(6, dataclasses.replace(fox(2), model="two"), progress.append)])
    result = await asyncio.wait_for(outcome, SLOW)
    assert result.model == "two"
    assert [(p.step, p.total, p.loading) for p in progress] == [(0, 0, "two"), (1, 2, None), (2, 2, None)]
    assert backend.loaded_models()[0] == "two"


async def test_the_bot_on_ray_survives_its_replicas_being_killed_mid_job_and_serves_u1(cluster, discord, bot_env,
                                                                                      tmp_path):
    """`python -m bot` with IMAGINE_BACKEND=ray on the stand-in: the replicas' processes killed while alice's job
    runs put it back in the queue (her message says so), it finishes on a restarted replica with her grid, and U1
    on that grid gives the upscale. Restarted while the cluster is down, the bot still takes bob's prompt (it
    remembers the model's defaults), says why it waits, and runs it once the cluster is back."""
    data = Path(bot_env["DATA_DIR"])
    data.mkdir(parents=True)
    async with await Store.open(data / "imagine.db", images_dir=data / "images") as store:  # as /limits would
        await store.set_limit(discord.guild.id, None, "max_steps", 150)  # a job long enough to be killed mid-way
    log = tmp_path / "bot.log"
    env = bot_env | {"IMAGINE_BACKEND": "ray", "RAY_ADDRESS": cluster["address"],
                     "IMAGINE_RAY_REPLICAS": str(REPLICAS), "IMAGINE_RAY_GPUS": "0"}
    async with bot_process(env, log) as bot:
        await discord.wait_for_connection(SLOW)
        await logged(log, "Ray backend ready")  # a first run takes prompts once a replica has answered
        run = await discord.slash(discord.alice, "general", "imagine", prompt="a lighthouse --steps 150")
        await run.wait_for(lambda m: "step" in m.content, SLOW)
        pids = replica_pids()
        assert len(pids) == REPLICAS
        for pid in pids:
            os.kill(pid, 9)

        grid = await run.wait_for(has_grid, SLOW)
        texts = [version.content for version in grid.history]
        lost = next((n for n, text in enumerate(texts) if "went away" in text and "first in line" in text), None)
        assert lost is not None, texts
        assert any("step" in text for text in texts[:lost]) and f"<@{discord.alice.id}>" in grid.content

        click = await discord.click(discord.alice, grid, "U1")
        assert (await click.acked()).elapsed < 3
        assert picture(await click.wait_for(has_upscale, SLOW)).size == (128, 128)

        # A polite stop, as systemd would: the Ray client disconnects, the replicas stay up.
        assert await stop_process(bot) == 0

    # Started again while the cluster can't be reached: the defaults its replicas gave last time are remembered, so
    # bob's prompt is taken and waits, his message saying why; nothing runs meanwhile.
    async with bot_process(env | {"RAY_ADDRESS": f"127.0.0.1:{free_port()}"}, log) as bot:
        await discord.wait_for_connection(SLOW, identifies=2)
        assert "(last seen: model " in await logged(log, "ready: waiting for the image workers")
        waiting = await discord.slash(discord.bob, "general", "imagine", prompt="a harbour at dusk")
        queued = await waiting.wait_for(lambda m: "can't be reached" in m.content, SLOW)
        assert "your job keeps its place" in queued.content and not queued.ephemeral
        assert await stop_process(bot) == 0

    # The cluster back: bob's job runs and he gets his grid; nothing was lost.
    async with bot_process(env, log) as bot:
        assert picture(await waiting.wait_for(has_grid, SLOW)).size == (128, 128)
        assert await stop_process(bot) == 0


async def test_the_application_gone_while_the_bot_runs_keeps_jobs_queued_until_it_is_back(cluster, discord, bot_env,
                                                                                         tmp_path):
    """The replicas lost while `python -m bot` runs (the Serve application deleted, as when the cluster's nodes go):
    the bot says so once, a new prompt is queued with a message saying the workers can't be reached, and when
    the application is deployed again the job runs and its member gets the grid (runs last: it redeploys the module's
    application)."""
    log = tmp_path / "bot.log"
    env = bot_env | {"IMAGINE_BACKEND": "ray", "RAY_ADDRESS": cluster["address"],
                     "IMAGINE_RAY_REPLICAS": str(REPLICAS), "IMAGINE_RAY_GPUS": "0"}
    async with bot_process(env, log) as bot:
        await discord.wait_for_connection(SLOW)
        await logged(log, "Ray backend ready")
        await asyncio.to_thread(serve.delete, APP)
        await logged(log, "Lost the Ray cluster")

        run = await discord.slash(discord.alice, "general", "imagine", prompt="a harbour in fog")
        queued = await run.wait_for(lambda m: "can't be reached" in m.content, SLOW)
        assert "your job keeps its place" in queued.content

        await asyncio.to_thread(serve.run, application(cluster["engine"], replicas=REPLICAS, gpus=0, torch_threads=1,
                                                       shutdown_timeout=30), name=APP, route_prefix=None)
        assert picture(await run.wait_for(has_grid, SLOW)).size == (128, 128)
        assert "is back: 2 replica(s)" in await logged(log, "The Ray cluster at")
        assert await stop_process(bot) == 0
