"""Prompt flags and options: what members type becomes one complete recipe, or a message saying what is wrong."""

from __future__ import annotations

import re

import pytest

from bot.parsing import BadInput, find_banned, parse_imagine, remix_text, split_flags
from engine.jobs import ModelDefaults

SD15 = ModelDefaults(steps=25, guidance=7.0, size=512, model="sd15", scheduler="PNDMScheduler", name="sd15")
TURBO = ModelDefaults(steps=4, guidance=0.0, size=512, model="stabilityai/sd-turbo", scheduler="EulerAncestral",
                      name="turbo")
XL = ModelDefaults(steps=30, guidance=5.0, size=1024, model="sdxl", scheduler="EulerDiscreteScheduler", name="xl")
MODELS = {"sd15": SD15, "turbo": TURBO, "xl": XL}
LORAS = ("pixel", "Ink", "film grain")


def test_midjourney_flags_fill_the_recipe():
    """--ar, --seed, --no, --steps and --guidance inside the prompt set the recipe; the prompt keeps only the words."""
    recipe = parse_imagine("a fox in snow --ar 16:9 --seed 42 --no text, watermark --steps 30 --guidance 6", SD15)

    assert recipe.prompt == "a fox in snow"
    assert recipe.negative_prompt == "text, watermark"
    assert (recipe.width, recipe.height, recipe.aspect) == (680, 384, "16:9")
    assert recipe.seeds == (42, 43, 44, 45)
    assert (recipe.steps, recipe.guidance) == (30, 6.0)


def test_slash_options_win_over_flags_in_the_prompt():
    """A value given both ways takes the slash-command option, as documented in README."""
    recipe = parse_imagine("a fox --ar 16:9 --steps 30 --no snow", SD15, aspect="2:3", steps=10, negative="rain")

    assert recipe.aspect == "2:3" and recipe.width < recipe.height
    assert recipe.steps == 10
    assert recipe.negative_prompt == "rain"


def test_model_defaults_apply_when_nothing_is_given():
    """Without flags or options the model's own steps, guidance and native size are used, square."""
    recipe = parse_imagine("a fox", SD15)

    assert (recipe.width, recipe.height, recipe.steps, recipe.guidance) == (512, 512, 25, 7.0)
    assert len(set(recipe.seeds)) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --ar 16x9", "must look like `16:9`"),
        ("a fox --ar 10:1", "too extreme"),
        ("a fox --ar 0:1", "too extreme"),
        ("a fox --seed -1", "Seed must be from 0 to 4294967295, got -1"),
        ("a fox --seed soon", "Seed must be a whole number"),
        ("a fox --steps 0", "Steps must be from 1 to 150, got 0"),
        ("a fox --guidance lots", "Guidance must be a number"),
        ("a fox --chaos 10", "`--chaos` is not an option I know"),
        ("a fox --ar 1:1 --ar 2:3", "given twice"),
        ("--ar 1:1", "The prompt is empty"),
    ],
)
def test_bad_values_say_what_is_wrong_and_what_is_allowed(text, message):
    """Each kind of bad input is refused with a sentence naming the problem."""
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        parse_imagine(text, SD15)


def test_flags_must_be_separate_words():
    """Double dashes inside words are part of the prompt, not flags."""
    prompt, flags = split_flags("a well--lit room --ar 3:2")
    assert prompt == "a well--lit room" and flags == {"aspect": "3:2"}


def test_banned_words_match_whole_words_in_any_case():
    """Banned phrases match whole words regardless of case, not parts of other words."""
    assert find_banned("A Red Fox", ["red fox"]) == "red fox"
    assert find_banned("a redder foxglove", ["red fox", "fox"]) is None


def test_a_suffix_joins_the_prompt_and_loses_to_the_prompts_flags_and_options():
    """The suffix's words end the prompt; option > prompt flag > suffix flag > default aspect > model default."""
    suffix = "golden hour --ar 16:9 --no text --steps 30"
    recipe = parse_imagine("a fox --no snow", SD15, suffix=suffix, default_aspect="2:3")
    assert recipe.prompt == "a fox golden hour" and recipe.negative_prompt == "snow"
    assert (recipe.aspect, recipe.steps) == ("16:9", 30)  # the suffix's flags beat the member's default aspect
    assert parse_imagine("a fox", SD15, suffix=suffix, aspect="1:1").aspect == "1:1"
    assert parse_imagine("a fox", SD15, default_aspect="2:3").aspect == "2:3"
    with pytest.raises(BadInput, match=r"In your suffix .*`--zoom` is not an option"):
        parse_imagine("a fox", SD15, suffix="--zoom 2")


@pytest.mark.parametrize("text", ["a red fox --ar 3:2 --no text", "a fox, at dusk --steps 12 --guidance 3.25",
                                  "an owl --ar 9:16"])
def test_a_remix_text_parses_back_to_the_same_recipe(text):
    """remix_text writes a recipe as prompt and flags that give the same recipe again, but for new seeds."""
    recipe = parse_imagine(text, SD15).to_dict()
    again = parse_imagine(remix_text(recipe, SD15), SD15, default_aspect="21:9").to_dict()
    assert {k: v for k, v in again.items() if k != "seeds"} == {k: v for k, v in recipe.items() if k != "seeds"}
    assert remix_text(parse_imagine("a red fox --ar 3:2 --no text", SD15).to_dict(), SD15) == \
        "a red fox --ar 3:2 --no text"


def test_zoom_is_read_only_in_the_custom_zoom_box():
    """--zoom is refused in a prompt with a sentence saying where it works; Custom Zoom reads it (1 < zoom <= 2)."""
    with pytest.raises(BadInput, match=r"`--zoom` is not an option of a prompt: it works in the Custom Zoom box"):
        parse_imagine("a fox --zoom 2", SD15)
    zoomed = parse_imagine("a fox --ar 16:9 --zoom 1.25", SD15, custom_zoom=True)
    assert (zoomed.prompt, zoomed.aspect, zoomed.zoom) == ("a fox", "16:9", 1.25)
    assert zoomed.to_dict()["zoom"] == 1.25 and "zoom" not in parse_imagine("a fox", SD15).to_dict()
    for text, says in [("a fox --zoom 1", "more than 1 and at most 2"), ("a fox --zoom 2.5", "got 2.5"),
                       ("a fox --zoom nan", "more than 1"), ("a fox --zoom wide", "got `wide`"),
                       ("a fox", "Custom Zoom needs `--zoom`")]:
        with pytest.raises(BadInput, match=says):
            parse_imagine(text, SD15, custom_zoom=True)
def test_the_model_option_beats_the_prompt_beats_the_suffix_beats_the_channel_default():
    """The model comes from the option, else --model in the prompt, else the suffix, else the channel's default,
    else the first configured; names ignore case."""
    assert parse_imagine("a fox", MODELS).model == "sd15"
    assert parse_imagine("a fox", MODELS, channel_model="xl").model == "xl"
    assert parse_imagine("a fox", MODELS, channel_model="xl", suffix="--model turbo").model == "turbo"
    assert parse_imagine("a fox --model XL", MODELS, channel_model="sd15", suffix="--model turbo").model == "xl"
    assert parse_imagine("a fox --model xl", MODELS, model="turbo", channel_model="sd15").model == "turbo"


def test_each_model_brings_its_defaults_and_explicit_values_still_win():
    """A turbo model's 4 steps and guidance 0, an XL model's 1024 px apply when nothing else is asked for."""
    turbo = parse_imagine("a fox --model turbo", MODELS)
    assert (turbo.steps, turbo.guidance, turbo.width) == (4, 0.0, 512)
    assert parse_imagine("a fox --model xl", MODELS).width == 1024
    explicit = parse_imagine("a fox --model turbo --steps 8 --guidance 1.5", MODELS)
    assert (explicit.steps, explicit.guidance) == (8, 1.5)


def test_a_channel_default_no_longer_configured_falls_back_to_the_first_model():
    """A moderator's channel default naming a removed model is ignored, not an error."""
    assert parse_imagine("a fox", MODELS, channel_model="gone").model == "sd15"


def test_loras_from_flags_and_a1111_tags_with_weights():
    """--lora name, --lora name:w and <lora:name:w> all count; tags leave the prompt; names ignore case."""
    recipe = parse_imagine("a fox <lora:INK:0.5> in snow --lora pixel --ar 3:2", MODELS, loras=LORAS)
    assert recipe.prompt == "a fox in snow" and recipe.aspect == "3:2"
    assert dict(recipe.loras) == {"pixel": 1.0, "Ink": 0.5}
    assert recipe.to_dict()["loras"] == [list(pair) for pair in recipe.loras]
    assert parse_imagine("a fox <lora:film grain:-0.25>", MODELS, loras=LORAS).loras == (("film grain", -0.25),)


def test_suffix_loras_add_to_the_prompts_and_the_prompt_weight_wins():
    """A LoRA in the member's suffix joins the prompt's; named in both, it takes the prompt's weight."""
    recipe = parse_imagine("a fox --lora pixel:0.3", MODELS, loras=LORAS, suffix="--lora ink --lora pixel:0.9")
    assert dict(recipe.loras) == {"Ink": 1.0, "pixel": 0.3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --model sdxxl", "There is no model called `sdxxl` here. Models here: `sd15`, `turbo`, `xl`."),
        ("a fox --model", "`--model` needs a model's name"),
        ("a fox --lora sparkle", "There is no LoRA called `sparkle` here. LoRAs here: `pixel`, `Ink`, `film grain`."),
        ("a fox --lora pixel:5", "The weight of LoRA `pixel` must be from -2 to 2, got 5."),
        ("a fox --lora pixel:lots", "The weight of LoRA `pixel` must be a number"),
        ("a fox <lora:pixel:9>", "The weight of LoRA `pixel` must be from -2 to 2, got 9."),
        ("a fox --lora pixel in snow", "A LoRA is named like `--lora pixel`"),
        ("a fox --lora pixel --lora PIXEL:0.5", "LoRA `pixel` is named twice in the prompt"),
        ("a fox --lora pixel --lora ink <lora:film grain> <lora:pixel2>", "There is no LoRA called `pixel2`"),
        ("<lora:pixel>", "The prompt is empty"),
    ],
)
def test_unknown_models_and_loras_and_bad_weights_are_refused_with_what_exists(text, message):
    """An unknown model or LoRA lists what exists; a bad weight says the range."""
    with pytest.raises(BadInput, match=re.escape(message)):
        parse_imagine(text, MODELS, loras=LORAS)


def test_a_fourth_lora_is_refused_and_so_is_any_lora_where_none_are_installed():
    """At most three LoRAs, counting the suffix's; a server without LoRAs says so."""
    with pytest.raises(BadInput, match=r"at most 3 LoRAs; this one names 4: `pixel`, `Ink`, `film grain`, `extra`\."):
        parse_imagine("a fox --lora pixel --lora ink <lora:film grain:0.5>", MODELS, loras=(*LORAS, "extra"),
                      suffix="--lora extra")
    with pytest.raises(BadInput, match="this server has no LoRAs installed"):
        parse_imagine("a fox --lora pixel", MODELS)
    with pytest.raises(BadInput, match=r"In your suffix .*no LoRA called `nope`"):
        parse_imagine("a fox", MODELS, loras=LORAS, suffix="--lora nope")
    with pytest.raises(BadInput, match=r"In your suffix .*no model called `nope`"):
        parse_imagine("a fox", MODELS, suffix="--model nope")
    assert parse_imagine("a fox --model xl", MODELS, suffix="--model nope").model == "xl"  # the prompt's wins


@pytest.mark.parametrize("text", ["a fox --model turbo --lora pixel:0.5 --lora ink", "a fox <lora:film grain:0.75>",
                                  "an owl --model xl --steps 12", "a fox --model sd15 --guidance 3"])
def test_a_remix_text_keeps_the_model_and_loras(text):
    """remix_text names a model other than the default and every LoRA, so the Remix makes the same recipe."""
    recipe = parse_imagine(text, MODELS, loras=LORAS).to_dict()
    written = remix_text(recipe, MODELS)
    again = parse_imagine(written, MODELS, loras=LORAS, channel_model="xl" if "--model" in written else None)
    assert {k: v for k, v in again.to_dict().items() if k != "seeds"} == {k: v for k, v in recipe.items()
                                                                          if k != "seeds"}
    assert ("--model" in written) == (recipe["model"] != "sd15")
