"""Jobs of different members in one pipeline call, on the real tiny pipeline: per-job truth, cancel, failure."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from engine import Engine, EngineSettings, JobCancelled, JobFailed, Progress, Request
from engine.images import read_parameters

SIZE = 64
TOLERANCE = 2  # of 255: batched and solo runs differ only by batch-size-dependent kernel rounding


@pytest.fixture
async def engine(tiny_model):
    """A started Engine on the tiny model that takes up to 4 jobs per call, with a preview every step."""
    engine = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=1, max_batch=4))
    await engine.start()
    yield engine
    await engine.stop()


def imagine(n: int, steps: int = 3) -> Request:
    """The n-th member's job: its own prompt, negative prompt and seeds, one shared recipe."""
    return Request("imagine", f"prompt number {n}", negative_prompt="blurry" if n % 2 else "", width=SIZE,
                   height=SIZE, steps=steps, guidance=7.0, seeds=tuple(range(100 * n, 100 * n + 4)))


def variation(n: int, source: bytes) -> Request:
    return Request("variation", f"variation number {n}", width=SIZE, height=SIZE, steps=4, guidance=7.0,
                   seeds=tuple(range(10 * n, 10 * n + 4)), init_image=source, strength=0.7)


def array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def max_difference(first, second) -> int:
    """Largest pixel difference between the images of two Results, image by image."""
    assert len(first.images) == len(second.images)
    return max(int(np.abs(array(a) - array(b)).max()) for a, b in zip(first.images, second.images))


async def alone(engine: Engine, requests: list[Request], prefix: str) -> list:
    return [await engine.submit(f"{prefix}{n}", request) for n, request in enumerate(requests)]


async def test_batched_jobs_get_their_own_images_progress_and_recipes(engine):
    """Three text-to-image jobs in one call each match their solo images (<= 2/255), with their own seeds, recipe,
    grid, progress and previews."""
    requests = [imagine(n) for n in range(3)]
    solo = await alone(engine, requests, "solo")
    seen: dict[int, list[Progress]] = {n: [] for n in range(3)}

    outcomes = engine.submit_batch([(f"batch{n}", request, seen[n].append) for n, request in enumerate(requests)])
    batched = [await outcome for outcome in outcomes]

    for n, (request, one, together) in enumerate(zip(requests, solo, batched)):
        assert max_difference(one, together) <= TOLERANCE
        assert together.seeds == request.seeds and len(together.images) == 4 and together.grid
        recipe = read_parameters(together.images[1])
        assert recipe.startswith(f"prompt number {n}\n") and f"Seed: {request.seeds[1]}," in recipe
        assert ("Negative prompt: blurry" in recipe) == (n % 2 == 1)
        assert f'Grid seeds: "{", ".join(map(str, request.seeds))}"' in read_parameters(together.grid)
        assert [(p.job_id, p.step, p.total) for p in seen[n]] == [(f"batch{n}", s, 3) for s in (1, 2, 3)]
    previews = [seen[n][0].preview for n in range(3)]
    assert all(previews) and len(set(previews)) == 3  # each from its own job's latents
    assert len({pixels for result in batched for pixels in map(bytes, map(array, result.images))}) == 12


async def test_batched_variations_match_their_solo_images(engine):
    """Variations of three different images in one call each match their solo images (<= 2/255): every job is
    denoised from its own init image, never a companion's."""
    sources = [(await engine.submit(f"source{n}", imagine(n))).images[n] for n in range(3)]
    requests = [variation(n, source) for n, source in enumerate(sources)]
    solo = await alone(engine, requests, "solo")

    batched = [await outcome for outcome in engine.submit_batch([(f"b{n}", r, None) for n, r in enumerate(requests)])]

    assert [max_difference(one, together) <= TOLERANCE for one, together in zip(solo, batched)] == [True] * 3
    assert max_difference(solo[0], batched[1]) > 10 * TOLERANCE  # a different job's images are far apart


async def test_cancelling_one_job_of_a_batch_answers_it_at_once_and_keeps_the_others(engine):
    """Cancelling one job of a running batch settles it at once; the call goes on and the others' images are
    those they would have had alone."""
    requests = [imagine(n, steps=6) for n in range(3)]
    solo = await alone(engine, requests, "solo")

    def cancel_at_first_step(progress: Progress) -> None:
        engine.cancel(progress.job_id)

    first, middle, last = engine.submit_batch([("a", requests[0], None), ("b", requests[1], cancel_at_first_step),
                                               ("c", requests[2], None)])
    first, last = asyncio.ensure_future(first), asyncio.ensure_future(last)
    with pytest.raises(JobCancelled, match="while it ran with others"):
        await middle

    assert max_difference(solo[0], await first) <= TOLERANCE
    assert max_difference(solo[2], await last) <= TOLERANCE


async def test_cancelling_every_job_of_a_batch_stops_the_call(engine):
    """When every job of a batch is cancelled, the call stops between two steps and each job raises JobCancelled."""
    steps: list[int] = []

    def cancel_all_at_step_two(progress: Progress) -> None:
        steps.append(progress.step)
        if progress.step == 2:
            for job_id in ("a", "b"):
                engine.cancel(job_id)

    outcomes = engine.submit_batch([("a", imagine(0, steps=20), cancel_all_at_step_two),
                                    ("b", imagine(1, steps=20), None)])
    for outcome in outcomes:
        with pytest.raises(JobCancelled):
            await outcome
    assert max(steps) < 20
    assert len((await engine.submit("next", imagine(2))).images) == 4  # the engine goes on


async def test_a_failing_job_in_a_batch_fails_alone_and_the_others_are_made(engine):
    """A job whose init image is broken fails with its own message; its companions are rerun alone and get
    their images."""
    source = (await engine.submit("source", imagine(0))).images[0]
    broken = source[: len(source) // 2]  # a cut-off PNG: the batched call fails while reading it
    requests = [variation(0, source), variation(1, broken), variation(2, source)]

    outcomes = [asyncio.ensure_future(o) for o in engine.submit_batch([(n, r, None) for n, r in enumerate(requests)])]
    await asyncio.wait(outcomes)

    with pytest.raises(JobFailed, match="Something went wrong while making the image"):
        outcomes[1].result()
    solo = await alone(engine, [requests[0], requests[2]], "solo")
    assert max_difference(solo[0], outcomes[0].result()) <= TOLERANCE
    assert max_difference(solo[1], outcomes[2].result()) <= TOLERANCE


async def test_out_of_memory_in_a_batched_call_reruns_each_job_alone(engine, monkeypatch):
    """An out-of-memory error in the batched pipeline call is not shown to anyone: each job is made alone."""
    import diffusers
    import torch

    original = diffusers.StableDiffusionPipeline.__call__
    batched_calls = []

    def no_memory_for_batches(self, *args, **kwargs):
        if kwargs.get("prompt_embeds") is not None:  # how the engine passes a batch's prompts
            batched_calls.append(len(kwargs["generator"]))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", no_memory_for_batches)
    outcomes = engine.submit_batch([(n, imagine(n), None) for n in range(2)])

    results = [await outcome for outcome in outcomes]
    assert batched_calls == [8]
    assert [result.seeds for result in results] == [imagine(0).seeds, imagine(1).seeds]


async def test_jobs_with_different_recipes_are_refused_as_one_batch(engine):
    """submit_batch refuses jobs whose batch keys differ (another size), and upscales, with a readable error."""
    other_size = Request("imagine", "wide", width=2 * SIZE, height=SIZE, steps=3, seeds=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="batch keys"):
        engine.submit_batch([("a", imagine(0), None), ("b", other_size, None)])
    upscale = Request("upscale", "up", steps=3, seeds=(1,), init_image=b"png")
    with pytest.raises(ValueError, match="batch keys"):
        engine.submit_batch([("a", upscale, None), ("b", upscale, None)])
    assert engine.queued == 0
