"""Several models and LoRAs end to end (issue 12): the real bot on the stand-in with two tiny models of different
weights, routing by the model option, --model and a channel's default, and the refusals members see."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.tiny import write_tiny_lora, write_tiny_pipeline
from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale, job_id, picture, recipe

LORAS = ("grain", "ink", "pixel", "zest")


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline again with other random weights: another model."""
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model-two"), seed=1)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder with four LoRAs for the tiny UNet (one file under four names: only the names matter here)."""
    folder = tmp_path_factory.mktemp("loras")
    first = write_tiny_lora(folder / f"{LORAS[0]}.safetensors")
    for name in LORAS[1:]:
        shutil.copy(first, folder / f"{name}.safetensors")
    return folder


@pytest.fixture
def two_models(start_bot, tiny_model: Path, second_model: Path, lora_dir: Path):
    """Start the bot with models `one` (the default) and `two`, one loaded at a time, and the LoRA folder."""
    return lambda **env: start_bot(IMAGINE_MODELS=f"one={tiny_model},two={second_model}", IMAGINE_MAX_LOADED_MODELS="1",
                                   IMAGINE_LORA_DIR=str(lora_dir), **env)


def options_of(discord, command: str) -> dict[str, dict]:
    definition = next(c for c in [*discord.global_commands, *discord.guild_commands.get(discord.guild.id, [])]
                      if c["name"] == command)
    return {option["name"]: option for option in definition.get("options", [])}


async def test_the_model_option_and_flag_route_the_job_a_channel_default_applies_and_buttons_keep_it(discord,
                                                                                                   two_models):
    """The option offers the configured names; --model, the option (which wins) and a channel's default each pick
    the model the PNG recipe and the embed name; the same seed differs per model; 🔄, U1 and Zoom Out keep the model and LoRA."""
    bot = await two_models()
    assert [c["value"] for c in options_of(discord, "imagine")["model"]["choices"]] == ["one", "two"]
    limits_set = {o["name"]: o for o in options_of(discord, "limits")["set"]["options"]}
    assert [c["value"] for c in limits_set["model"]["choices"]] == ["one", "two"]

    by_flag = await (await discord.slash(discord.alice, "general", "imagine",
                                         prompt="a fox --seed 7 --model two <lora:ink:0.5>")).wait_for(has_grid,
                                                                                                       GRID_TIMEOUT)
    # In a channel of its own, whose edit allowance (bot/messages.py EditBudget) is untouched: "loading" is shown.
    by_option = await (await discord.slash(discord.alice, "nsfw-art", "imagine", model="one",
                                           prompt="a fox --seed 7 --model two <lora:ink:0.5>")).wait_for(has_grid,
                                                                                                         GRID_TIMEOUT)
    assert recipe(by_flag)["Model"] == "two" and recipe(by_option)["Model"] == "one"
    shown = {f["name"]: f["value"] for f in by_flag.embeds[0]["fields"]}
    assert (shown["Model"], shown["LoRAs"]) == ("two", "ink 0.5")
    assert recipe(by_flag)["prompt"] == "a fox <lora:ink:0.5>" and "ink: " in recipe(by_flag)["Lora hashes"]
    assert picture(by_flag).tobytes() != picture(by_option).tobytes()  # same seed, other weights
    assert any("loading model one" in version.content for version in by_option.history)  # two was loaded

    await (await discord.slash(discord.mod, "art", "limits set", model="two")).wait_for(lambda m: m.ephemeral)
    shown = await (await discord.slash(discord.mod, "art", "limits show")).wait_for(lambda m: m.ephemeral)
    assert "Default model: **two** (set for this channel)" in shown.content
    in_art = await (await discord.slash(discord.bob, "art", "imagine", prompt="an owl")).wait_for(has_grid,
                                                                                                  GRID_TIMEOUT)
    in_general = await (await discord.slash(discord.bob, "general", "imagine", prompt="an owl")).wait_for(
        has_grid, GRID_TIMEOUT)
    assert (recipe(in_art)["Model"], recipe(in_general)["Model"]) == ("two", "one")

    reroll = await (await discord.click(discord.alice, by_flag, "🔄")).wait_for(has_grid, GRID_TIMEOUT)
    assert (recipe(reroll)["Model"], recipe(reroll)["prompt"]) == ("two", "a fox <lora:ink:0.5>")
    upscale = await (await discord.click(discord.alice, by_flag, "U1")).wait_for(has_upscale, GRID_TIMEOUT)
    zoomed = await (await discord.click(discord.alice, upscale, "Zoom Out 2x")).wait_for(has_grid, GRID_TIMEOUT)
    assert (recipe(zoomed)["Model"], recipe(zoomed)["Zoom"], recipe(zoomed)["prompt"]) == (
        "two", "2", "a fox <lora:ink:0.5>")  # Zoom Out keeps the upscale's model and LoRA too
    listed = await (await discord.slash(discord.alice, "general", "models")).wait_for(lambda m: m.ephemeral)
    assert "`one` — **default**" in listed.content and "`two` — **loaded**" in listed.content
    assert "`grain`, `ink`, `pixel`, `zest`" in listed.content
    assert bot.engine.loaded_models() == ("two",)


async def test_unknown_models_and_loras_a_bad_weight_and_a_fourth_lora_are_refused_privately(discord, two_models):
    """Each is refused with an ephemeral sentence saying what exists or what is allowed; nothing is queued. A channel
    default naming a model no longer configured gives the first model."""
    bot = await two_models()
    for prompt, said in [
        ("a fox --model three", "There is no model called `three` here. Models here: `one`, `two`."),
        ("a fox --lora sparkle", "There is no LoRA called `sparkle` here. LoRAs here: `grain`, `ink`, `pixel`, `zest`."),
        ("a fox <lora:ink:7>", "The weight of LoRA `ink` must be from -2 to 2, got 7."),
        ("a fox --lora grain --lora ink:0.5 --lora pixel <lora:zest:1>",
         "A prompt may use at most 3 LoRAs; this one names 4: `grain`, `ink`, `pixel`, `zest`."),
    ]:
        run = await discord.slash(discord.alice, "general", "imagine", prompt=prompt)
        refusal = await run.wait_for(lambda m: m.ephemeral)
        assert refusal.content == said
        assert (await run.acked()).elapsed < 3
    assert await bot.store.unfinished_jobs() == []
    assert not any(has_grid(m) for m in discord.messages("general"))


    # A channel default set before the owner took that model out of IMAGINE_MODELS: the first model, no error.
    await bot.store.set_limit(discord.guild.id, discord.channel("art").id, "model", "three")
    shown = await (await discord.slash(discord.mod, "art", "limits show")).wait_for(lambda m: m.ephemeral)
    assert "Default model: **one** (`three` is set for this channel but no longer configured)" in shown.content
    grid = await (await discord.slash(discord.alice, "art", "imagine", prompt="a fox")).wait_for(has_grid,
                                                                                                 GRID_TIMEOUT)
    assert recipe(grid)["Model"] == "one"


async def test_with_one_model_imagine_offers_no_model_option(discord, bot):
    """A server with one model gets no `model` option to choose from (and /limits set none either)."""
    assert "model" not in options_of(discord, "imagine")
    assert "model" not in [option["name"] for option in options_of(discord, "limits")["set"]["options"]]


async def test_waiting_jobs_for_the_loaded_model_go_first_and_the_one_passed_over_runs_soon_after(discord,
                                                                                               two_models):
    """With `one` loaded and alice's jobs for `two` first in the fair queue, bob's two jobs for `one` run first (no
    switch), then alice's: one model switch instead of four."""
    bot = await two_models()
    async with bot.runner.held():  # line the jobs up as a busy server would
        runs = []
        for n in range(2):
            for user, model in (("alice", "two"), ("bob", "one")):
                runs.append((user, await discord.slash(user, "general", "imagine", prompt=f"a fox {n} --model {model}")))
                await runs[-1][1].wait_for(lambda m: "Waiting to start" in m.content, GRID_TIMEOUT)
    grids = [(user, await run.wait_for(has_grid, GRID_TIMEOUT)) for user, run in runs]

    jobs = [(user, await bot.store.get_job(job_id(grid))) for user, grid in grids]
    order = [user for user, job in sorted(jobs, key=lambda pair: pair[1].started_at)]
    assert order == ["bob", "bob", "alice", "alice"]  # fair order alone: alice, bob, alice, bob
