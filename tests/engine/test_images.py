"""engine.images: grids, PNG recipe chunks and blurring, with Pillow only."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from engine.images import blur, make_grid, parameters_text, png_bytes, read_parameters


def _solid(color: tuple[int, int, int], size=(40, 24)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_grid_places_four_images_in_reading_order():
    """make_grid puts 4 images of one size into a 2x2 grid: 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right."""
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = make_grid([_solid(c) for c in colors])
    assert grid.size == (80, 48)
    assert [grid.getpixel(xy) for xy in [(5, 5), (45, 5), (5, 30), (45, 30)]] == colors


def test_grid_refuses_other_counts():
    """make_grid says how many images it got when it is not 4."""
    with pytest.raises(ValueError, match="needs 4 images, got 3"):
        make_grid([_solid((0, 0, 0))] * 3)


def test_png_carries_parameters_chunk():
    """png_bytes writes the A1111 "parameters" chunk that read_parameters gives back."""
    text = parameters_text("a fox", "blurry", steps=25, sampler="EulerDiscreteScheduler", guidance=7.0, seed=42,
                           width=512, height=512, model="sd15")
    assert text == ("a fox\nNegative prompt: blurry\nSteps: 25, Sampler: EulerDiscreteScheduler, CFG scale: 7, "
                    "Seed: 42, Size: 512x512, Model: sd15")
    assert read_parameters(png_bytes(_solid((1, 2, 3)), text)) == text
    assert read_parameters(png_bytes(_solid((1, 2, 3)), None)) is None


def test_blur_keeps_size_and_recipe_but_hides_detail():
    """blur returns a PNG of the same size and recipe whose sharp edges are gone."""
    checker = Image.new("RGB", (64, 64), (0, 0, 0))
    for x in range(0, 64, 8):
        for y in range(0, 64, 8):
            if (x + y) // 8 % 2:
                checker.paste((255, 255, 255), (x, y, x + 8, y + 8))
    blurred = blur(png_bytes(checker, "recipe"))
    image = Image.open(io.BytesIO(blurred))
    assert image.size == (64, 64)
    assert read_parameters(blurred) == "recipe"
    low, high = image.convert("L").getextrema()
    assert high - low < 64  # a black/white checkerboard becomes a near-uniform grey
    assert ImageChops.difference(image.convert("RGB"), checker).getbbox() is not None
