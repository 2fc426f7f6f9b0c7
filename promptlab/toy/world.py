"""Generates the toy world on disk: task images with CoOp splits, an unlabelled pool, pretraining
images with captions, class names and per-class descriptions.

Layout of ``<out>/`` (the default is ``toy``, the `toy_world` stage of ``dvc.yaml``)::

    images/<style>/<shape>/<n>.png      labelled task images, 4 styles x 8 shapes
    splits/{shapes,style_shift,mixed}.json   CoOp-format splits, paths relative to images/
    image_attributes.json               what each task image shows (colour, size...), for diagnostics
    unlabelled/<style>/<n>.png          label-free pool (labels kept apart in unlabelled/labels.json)
    pretrain/<n>.png + captions.jsonl   image-text pairs for the tiny CLIP and tiny DINO
    classnames.txt, descriptions.json   the 8 shape names; sentences describing each shape (NoLA)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from promptlab.toy.render import COLOURS, SHAPES, STYLES, Attributes, random_attributes, render

MAIN_STYLE = "filled"
SHIFTED_STYLE = "photo"
TASKS = {
    # task: (training styles, test styles)
    "shapes": ((MAIN_STYLE,), (MAIN_STYLE,)),
    "style_shift": ((MAIN_STYLE,), (SHIFTED_STYLE,)),
    "mixed": (STYLES, STYLES),
}
PHOTO_SHARE_IN_PRETRAINING = 0.1  # the shifted style is rare in pretraining: zero-shot is weaker there


def held_out_combination(shape: str, colour: str) -> bool:
    """Three of every eight (shape, colour) pairs never appear in pretraining (three colours per shape)."""
    return (SHAPES.index(shape) + list(COLOURS).index(colour)) % 8 in (0, 2, 4)


# Web captions sometimes say how a picture looks; so do some toy captions. These phrases are what
# MoCoOp's toy template groups (configs/toy/mocoop.yaml) are made of: one group per style.
STYLE_PHRASES = {
    "filled": ("a drawing of a {}", "a flat {}"),
    "outline": ("a sketch of a {}", "an outline of a {}"),
    "pixelated": ("a pixelated photo of a {}", "a low resolution photo of a {}"),
    "photo": ("a photo of a {}", "a good photo of a {}"),
}
STYLE_WORDS_SHARE = 0.3  # of the captions that name the shape


def caption(attributes: Attributes, rng: random.Random) -> tuple[str, dict]:
    """A caption naming some attributes: 40% shape only, 20% colour only, 40% both; 30% of those
    naming the shape also name the style (:data:`STYLE_PHRASES`).

    Returns:
        (text, the attributes it names), e.g. ("a sketch of a red star", {"shape": "star", "colour": "red",
        "style": "outline"}).
    """
    draw = rng.random()
    if draw < 0.4:
        named = {"shape": attributes.shape}
        text = rng.choice(("a {shape}", "an image of a {shape}", "a {shape} shape", "the {shape}"))
    elif draw < 0.6:
        named = {"colour": attributes.colour}
        text = rng.choice(("something {colour}", "a {colour} object", "{colour}", "a {colour} thing"))
    else:
        named = {"shape": attributes.shape, "colour": attributes.colour}
        text = rng.choice(("a {colour} {shape}", "an image of a {colour} {shape}", "the {colour} {shape}"))
    if "shape" in named and rng.random() < STYLE_WORDS_SHARE:
        subject = "{colour} {shape}" if "colour" in named else "{shape}"
        text = rng.choice(STYLE_PHRASES[attributes.style]).format(subject)
        named["style"] = attributes.style
    return text.format(**named), named


DESCRIPTION_FACTS = {
    "circle": ["round with no corners", "a perfectly curved closed outline", "like a disc or a coin"],
    "square": ["four equal straight sides", "four right-angled corners", "like a box seen from the front"],
    "triangle": ["three straight sides", "three pointed corners", "a pointed top and a flat base"],
    "star": ["five pointed arms", "spiky points around a centre", "like a star in the night sky"],
    "hexagon": ["six straight sides", "six corners", "like a honeycomb cell"],
    "cross": ["two bars crossing in the middle", "four arms of equal length", "like a plus sign"],
    "diamond": ["a rhombus standing on one point", "four sides tilted like a kite", "taller than it is wide"],
    "heart": ["two rounded lobes on top", "a point at the bottom", "like a valentine symbol"],
}


def descriptions() -> dict[str, list[str]]:
    """Sentences describing each shape (the NoLA descriptions format: class name -> sentences)."""
    return {
        shape: [f"a {shape} is a shape with {fact}." for fact in facts]
        + [f"a picture of a {shape}, which has {facts[0]}.", f"a {shape}: {facts[1]}."]
        for shape, facts in DESCRIPTION_FACTS.items()
    }


def _write(image_root: Path, relative: str, attributes: Attributes, rng: random.Random) -> None:
    path = image_root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    render(attributes, rng).save(path)


def generate(
    out_dir: str | Path = "toy",
    seed: int = 0,
    per_class_and_style: int = 60,
    unlabelled_per_class: int = 40,
    pretrain_images: int = 20000,
) -> Path:
    """Writes the toy world (deterministic for ``seed``); returns ``out_dir``."""
    out = Path(out_dir)
    rng = random.Random(seed)

    # Labelled task images: per style and shape, 40% train, 10% val, 50% test.
    n_train, n_val = int(per_class_and_style * 0.4), int(per_class_and_style * 0.1)
    by_split: dict[tuple[str, str], list[list]] = {}
    image_attributes = {}
    for style in STYLES:
        for label, shape in enumerate(SHAPES):
            for index in range(per_class_and_style):
                relative = f"{style}/{shape}/{index:04d}.png"
                attributes = random_attributes(rng, shapes=(shape,), styles=(style,))
                _write(out / "images", relative, attributes, rng)
                image_attributes[relative] = attributes.to_dict()
                split = "train" if index < n_train else "val" if index < n_train + n_val else "test"
                by_split.setdefault((style, split), []).append([relative, label, shape])
    (out / "image_attributes.json").write_text(json.dumps(image_attributes, indent=0))
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for task, (train_styles, test_styles) in TASKS.items():
        task_split = {
            "train": [item for style in train_styles for item in by_split[(style, "train")]],
            "val": [item for style in train_styles for item in by_split[(style, "val")]],
            "test": [item for style in test_styles for item in by_split[(style, "test")]],
        }
        (out / "splits" / f"{task}.json").write_text(json.dumps(task_split))

    # Unlabelled pools, one per style; their labels are kept apart for evaluation only.
    labels = {}
    for style in STYLES:
        for index in range(unlabelled_per_class * len(SHAPES)):
            attributes = random_attributes(rng, styles=(style,))
            relative = f"{style}/{index:05d}.png"
            _write(out / "unlabelled", relative, attributes, rng)
            labels[relative] = attributes.shape
    (out / "unlabelled" / "labels.json").write_text(json.dumps(labels, indent=0))

    # Pretraining pairs: held-out shape/colour pairs never appear, the shifted style rarely.
    pretrain_styles = tuple(s for s in STYLES if s != SHIFTED_STYLE)
    with (out / "captions.jsonl").open("w") as f:
        for index in range(pretrain_images):
            while True:
                style = SHIFTED_STYLE if rng.random() < PHOTO_SHARE_IN_PRETRAINING else rng.choice(pretrain_styles)
                attributes = random_attributes(rng, styles=(style,))
                if not held_out_combination(attributes.shape, attributes.colour):
                    break
            relative = f"pretrain/{index:05d}.png"
            _write(out, relative, attributes, rng)
            text, _ = caption(attributes, rng)
            f.write(json.dumps({"image": relative, "caption": text, **attributes.to_dict()}) + "\n")

    (out / "classnames.txt").write_text("\n".join(SHAPES) + "\n")
    (out / "descriptions.json").write_text(json.dumps(descriptions(), indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m promptlab.toy.world``: generates the toy world."""
    parser = argparse.ArgumentParser(description="Generate the offline toy world.")
    parser.add_argument("--out", default="toy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per_class_and_style", type=int, default=60)
    parser.add_argument("--unlabelled_per_class", type=int, default=40)
    parser.add_argument("--pretrain_images", type=int, default=20000)
    args = parser.parse_args(argv)
    out = generate(args.out, args.seed, args.per_class_and_style, args.unlabelled_per_class, args.pretrain_images)
    print(f"Wrote the toy world to {out}")


if __name__ == "__main__":
    main()
