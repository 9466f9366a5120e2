"""Several models and LoRAs in the Engine (issue 12): two tiny models with different weights, one loaded at a time,
and tiny LoRAs written with peft, all through the real from_pretrained / load_lora_weights paths."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import shutil
import weakref
from pathlib import Path

import pytest
from PIL import Image

from engine import Engine, EngineSettings, JobFailed, Request
from engine.batching import recipe_key
from engine.images import read_parameters
from engine.models import read_defaults
from engine.tiny import write_tiny_lora

SIZE = 64


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder: `ink` fits the tiny UNet, `wide` was made for a wider UNet (same layer names, other shapes)."""
    folder = tmp_path_factory.mktemp("loras")
    write_tiny_lora(folder / "ink.safetensors")
    write_tiny_lora(folder / "wide.safetensors", mismatched=True)
    return folder


@pytest.fixture
async def two_models(tiny_model, tiny_model_two, lora_dir):
    """An Engine with models `one` (the default) and `two`, one on the device at a time, and the LoRA folder."""
    engine = Engine(EngineSettings(models=f"one={tiny_model},two={tiny_model_two}", lora_dir=str(lora_dir),
                                   max_loaded_models=1, max_batch=2, device="cpu", preview_every=0))
    await engine.start()
    yield engine
    await engine.stop()


def imagine(model: str = "", loras=(), seeds=(1, 2, 3, 4)) -> Request:
    return Request("imagine", "a red fox in snow", width=SIZE, height=SIZE, steps=2, seeds=seeds, model=model,
                   loras=loras)


def pixels(png: bytes) -> bytes:
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def rss_mib() -> float:
    """This process's resident memory, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_each_model_makes_its_own_images_and_the_recipe_names_it(two_models, tiny_model_two):
    """The same seed gives other images on the other model, and so does a zoom (each model's inpainting sibling);
    Result and PNG name the model and its UNet's hash; the models and their defaults are known before the second one
    is loaded, and jobs of two models never share a call."""
    assert list(two_models.models) == ["one", "two"] and two_models.defaults.name == "one"
    assert two_models.models["two"].size == SIZE and two_models.loaded_models() == ("one",)
    assert two_models.loras == ("ink", "wide")

    first = await two_models.submit(1, imagine())
    other = await two_models.submit(2, imagine("two"))
    assert first.model == "one" and other.model == "two" and two_models.loaded_models() == ("two",)
    assert [pixels(a) != pixels(b) for a, b in zip(first.images, other.images)] == [True] * 4
    unet = tiny_model_two / "unet" / "diffusion_pytorch_model.safetensors"
    assert f"Model: two, Model hash: {short_hash(unet)}" in read_parameters(other.images[0])
    with pytest.raises(ValueError, match="batch keys"):
        two_models.submit_batch([(3, imagine("one"), None), (4, imagine("two"), None)])

    # Each model zooms out with its own inpainting sibling: the same zoom of one picture differs per model.
    zoom = [Request("zoom", "a red fox in snow", width=SIZE, height=SIZE, steps=2, seeds=(1,),
                    init_image=first.images[0], zoom=2.0, model=model) for model in ("one", "two")]
    zoomed = [await two_models.submit(f"zoom-{n}", request) for n, request in enumerate(zoom)]
    assert [result.model for result in zoomed] == ["one", "two"]
    assert pixels(zoomed[0].images[0]) != pixels(zoomed[1].images[0])


async def test_one_loaded_model_alternating_jobs_reload_correctly_and_memory_stays_flat(two_models, tiny_model):
    """With IMAGINE_MAX_LOADED_MODELS=1, ten alternating jobs each say "loading" once, first, make their model's
    images again, and leave nothing of the evicted model alive: RSS grows by less than two models' weights."""
    reference = {"one": await two_models.submit("ref-one", imagine("one")),
                 "two": await two_models.submit("ref-two", imagine("two"))}
    weights_mib = sum(path.stat().st_size for path in tiny_model.rglob("*.safetensors")) / 2**20
    evicted = weakref.ref(two_models._runner.current.t2i.unet)  # the model "two", evicted by the next job
    memory = []
    for n in range(10):
        model = ("one", "two")[n % 2]
        progress = []
        result = await two_models.submit(f"switch-{n}", imagine(model), progress.append)
        assert [(p.step, p.total, p.loading) for p in progress[:1]] == [(0, 0, model)]
        assert [p.loading for p in progress[1:]] == [None] * 2 and progress[-1].step == 2
        assert [pixels(png) for png in result.images] == [pixels(png) for png in reference[model].images]
        assert two_models.loaded_models() == (model,)
        gc.collect()
        if n == 0:
            assert evicted() is None, "the evicted model's UNet is still referenced"
        memory.append(rss_mib())
    growth = max(memory[2:]) - memory[1]
    assert growth < 2 * weights_mib, f"RSS grew {growth:.1f} MiB over {len(memory)} switches: {memory}"


async def test_a_lora_changes_the_images_weight_zero_does_not_and_nothing_leaks_into_the_next_job(two_models,
                                                                                                 lora_dir):
    """A LoRA changes the pictures; at weight 0 they equal the LoRA-less ones, as do the next job's without it; the
    recipe carries it A1111-style (<lora:ink:0.8> in the prompt, Lora hashes)."""
    plain = await two_models.submit(1, imagine())
    with_lora = await two_models.submit(2, imagine(loras=(("ink", 0.8),)))
    at_zero = await two_models.submit(3, imagine(loras=(("ink", 0),)))
    after = await two_models.submit(4, imagine())
    assert [pixels(a) != pixels(b) for a, b in zip(plain.images, with_lora.images)] == [True] * 4
    assert [pixels(png) for png in at_zero.images] == [pixels(png) for png in plain.images]
    assert [pixels(png) for png in after.images] == [pixels(png) for png in plain.images]
    recipe = read_parameters(with_lora.images[0])
    assert recipe.startswith("a red fox in snow <lora:ink:0.8>\n")
    assert f'Lora hashes: "ink: {short_hash(lora_dir / "ink.safetensors")}"' in recipe
    assert "lora" not in read_parameters(after.images[0]).lower()


async def test_a_lora_that_does_not_fit_fails_only_its_job(two_models):
    """A LoRA made for another UNet, an unknown LoRA and an unknown model each fail their job with a sentence; the
    engine goes on, and the next job, with or without a LoRA, is as before."""
    plain = await two_models.submit(1, imagine())
    with pytest.raises(JobFailed, match=r"The LoRA wide doesn't fit the model one: .*size mismatch .* in the LoRA"):
        await two_models.submit(2, imagine(loras=(("ink", 1.0), ("wide", 1.0))))
    with pytest.raises(JobFailed, match="There is no LoRA called sepia here; the LoRAs are ink, wide"):
        await two_models.submit(3, imagine(loras=(("sepia", 1.0),)))
    with pytest.raises(JobFailed, match="There is no model called xl here; the models are one, two"):
        await two_models.submit(4, imagine("xl"))
    after = await two_models.submit(5, imagine())
    assert [pixels(png) for png in after.images] == [pixels(png) for png in plain.images]
    inked = await two_models.submit(6, imagine(loras=(("ink", 1.0),)))
    assert pixels(inked.images[0]) != pixels(plain.images[0])


def test_model_defaults_come_from_the_configs_and_a_turbo_model_gets_4_steps_and_no_guidance(tiny_model):
    """Steps, guidance, native size and scheduler are read from the model's config files; "turbo" in a model's name
    or source gives 4 steps, guidance 0 and 512 px; IMAGINE_STEPS still wins."""
    defaults, pipeline = read_defaults("one", str(tiny_model), EngineSettings())
    assert (defaults.steps, defaults.guidance, defaults.size, defaults.scheduler, defaults.name, pipeline) == (
        25, 7.0, SIZE, "EulerDiscreteScheduler", "one", "StableDiffusionPipeline")
    turbo, _ = read_defaults("turbo", str(tiny_model), EngineSettings())
    assert (turbo.steps, turbo.guidance, turbo.size) == (4, 0.0, 512)
    assert read_defaults("turbo", str(tiny_model), EngineSettings(steps=8))[0].steps == 8


def test_the_batch_key_holds_the_model_and_the_lora_set_with_weights():
    """Jobs share a call only with one model and one LoRA set at the same weights (in any order); an old recipe
    without "model" or "loras" keys like another old one."""
    old = {"prompt": "a fox", "width": 512, "height": 512, "steps": 25, "guidance": 7.0, "seeds": [1, 2, 3, 4]}
    key = lambda **changes: recipe_key("imagine", old | changes)  # noqa: E731
    assert key() == recipe_key("imagine", dict(old)) == key(loras=[])
    assert len({key(), key(model="one"), key(model="two")}) == 3
    assert key(loras=[["ink", 0.8], ["grain", 1]]) == key(loras=[["grain", 1.0], ["ink", 0.8]])
    assert len({key(loras=[["ink", 0.8]]), key(loras=[["ink", 0.5]]), key(loras=[["grain", 0.8]])}) == 3


async def test_a_model_that_fails_to_load_fails_its_job_and_the_engine_goes_on(tiny_model, tmp_path):
    """A configured model whose weights are gone by the time a job needs it fails that job with a sentence; the
    next job for the default model is made."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    engine = Engine(EngineSettings(models=f"one={tiny_model},broken={broken}", device="cpu", preview_every=0))
    await engine.start()
    try:
        with pytest.raises(JobFailed, match="The model broken could not be loaded here"):
            await engine.submit(1, imagine("broken"))
        result = await engine.submit(2, imagine())
        assert result.model == "one" and engine.loaded_models() == ("one",)
    finally:
        await engine.stop()
