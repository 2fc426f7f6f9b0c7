"""Procedural rendering of the toy world: coloured shapes on textured backgrounds in several styles.

Every image is a pure function of its attributes and a seeded ``random.Random``, so datasets are
reproducible bit for bit. Shapes are drawn at 4x resolution and downsampled (anti-aliased).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 215),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 220),
    "pink": (245, 130, 190),
}
BACKGROUNDS = ("plain", "stripes", "checker", "noise", "gradient")
SIZES = {"small": 0.22, "medium": 0.3, "large": 0.38}  # radius as a fraction of the image side
STYLES = ("filled", "outline", "pixelated", "photo")

SCALE = 4  # draw at 4x, then downsample


@dataclass(frozen=True)
class Attributes:
    """What one toy image shows."""

    shape: str
    colour: str
    background: str
    size: str
    style: str
    x: float  # centre, as a fraction of the image side
    y: float
    rotation: float  # degrees

    def to_dict(self) -> dict:
        """JSON-ready, as the world's image_attributes.json records it."""
        return asdict(self)


def random_attributes(rng: random.Random, shapes=SHAPES, colours=tuple(COLOURS), styles=STYLES) -> Attributes:
    """Draws attributes uniformly (position keeps the shape inside the image)."""
    size = rng.choice(tuple(SIZES))
    margin = SIZES[size] + 0.04
    return Attributes(
        shape=rng.choice(shapes),
        colour=rng.choice(colours),
        background=rng.choice(BACKGROUNDS),
        size=size,
        style=rng.choice(styles),
        x=rng.uniform(margin, 1 - margin),
        y=rng.uniform(margin, 1 - margin),
        rotation=rng.uniform(-20, 20),
    )


def _polygon(shape: str) -> list[tuple[float, float]]:
    """Unit-radius outline of a shape, centred at the origin, y down."""

    def regular(n: int, start: float) -> list[tuple[float, float]]:
        return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]

    if shape == "circle":
        return regular(48, 0)
    if shape == "square":
        return [(x * 0.8, y * 0.8) for x, y in [(-1, -1), (1, -1), (1, 1), (-1, 1)]]
    if shape == "triangle":
        return [(x, y + 0.15) for x, y in regular(3, -math.pi / 2)]
    if shape == "hexagon":
        return regular(6, 0)
    if shape == "diamond":
        return [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.42
            angle = -math.pi / 2 + math.pi * k / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = 0.3, 0.95
        return [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
    if shape == "heart":
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 17, -y / 17 + 0.1))
        return points
    raise ValueError(f"Unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}.")


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in colour)
    return r, g, b


def _background(kind: str, side: int, rng: random.Random) -> Image.Image:
    dark = rng.random() < 0.5
    base = rng.randint(15, 70) if dark else rng.randint(170, 235)
    tone = (base + rng.randint(-10, 10), base + rng.randint(-10, 10), base + rng.randint(-10, 10))
    other = tuple(min(255, max(0, c + (40 if dark else -40))) for c in tone)
    image = Image.new("RGB", (side, side), tone)
    draw = ImageDraw.Draw(image)
    if kind == "stripes":
        width = rng.randint(3, 6) * SCALE
        for offset in range(-side, side * 2, width * 2):
            draw.polygon(
                [(offset, 0), (offset + width, 0), (offset + width - side, side), (offset - side, side)], fill=other
            )
    elif kind == "checker":
        cell = rng.randint(4, 8) * SCALE
        for i in range(0, side, cell):
            for j in range(0, side, cell):
                if (i // cell + j // cell) % 2:
                    draw.rectangle([i, j, i + cell - 1, j + cell - 1], fill=other)
    elif kind == "noise":
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 25, (side // SCALE, side // SCALE, 3))
        small = np.clip(np.array(tone, dtype=float) + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.Resampling.NEAREST)
    elif kind == "gradient":
        ramp = np.linspace(0, 1, side)[None, :, None]
        array = np.array(tone, dtype=float) * (1 - ramp) + np.array(other, dtype=float) * ramp
        image = Image.fromarray(np.repeat(array, side, axis=0).astype(np.uint8))
    return image


def render(attributes: Attributes, rng: random.Random, size: int = 32) -> Image.Image:
    """Renders one ``size`` x ``size`` RGB image of ``attributes``."""
    side = size * SCALE
    image = _background(attributes.background, side, rng)
    colour = _jitter(COLOURS[attributes.colour], rng, 18)
    radius = SIZES[attributes.size] * side
    cx, cy = attributes.x * side, attributes.y * side
    angle = math.radians(attributes.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    points = [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in _polygon(attributes.shape)
    ]
    draw = ImageDraw.Draw(image)
    style = attributes.style
    if style == "outline":
        draw.line(
            [*points, points[0]], fill=colour, width=int(0.09 * side * SIZES[attributes.size] / 0.3), joint="curve"
        )
    elif style == "photo":
        shadow = [(x + 0.04 * side, y + 0.05 * side) for x, y in points]
        background = cast(tuple[int, int, int], image.getpixel((int(cx), int(cy))))  # an RGB image
        draw.polygon(shadow, fill=tuple(int(c * 0.35) for c in background))
        draw.polygon(points, fill=colour)
    else:
        draw.polygon(points, fill=colour)

    if style == "pixelated":
        cells = rng.choice((8, 10, 12))
        return image.resize((cells, cells), Image.Resampling.BOX).resize((size, size), Image.Resampling.NEAREST)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if style == "photo":
        # Soft focus, a lighting gradient across the scene and sensor noise.
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
        array = np.asarray(image, dtype=float)
        light = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.25), size)
        array = array * (light[:, None, None] if rng.random() < 0.5 else light[None, :, None])
        array += np.random.default_rng(rng.getrandbits(32)).normal(0, 12, array.shape)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    return image
