"""Prompt flags and options: what members type becomes one complete recipe, or a message saying what is wrong."""

from __future__ import annotations

import pytest

from bot.parsing import BadInput, find_banned, parse_imagine, remix_text, split_flags
from engine.jobs import ModelDefaults

SD15 = ModelDefaults(steps=25, guidance=7.0, size=512, model="sd15", scheduler="PNDMScheduler")


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
