"""What NoLA's visual prompts cost toy-clip before any training: the description classifier (stage 1)
on the toy world's test images, with the tower as it is and with N prompts inserted at the reference's
initialisation (uniform within 0.0625), scaled by 0, 0.25, 1 and 4.

    python benchmarks/nola_prompt_cost.py     # 4 and 16 prompts, three tasks, about 1.5 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.provenance import current_commit
from promptlab.data.images import load_image
from promptlab.data.transforms import test_transform
from promptlab.methods import NoLA

OUT = Path(__file__).parent / "nola_prompt_cost.json"
TEMPLATES = ["a photo of a {}.", "an image of a {}", "a {} shape"]  # configs/toy/nola.yaml's
SCALES = (0.0, 0.25, 1.0, 4.0)


def measure(toy: Path, task: str, n_prompts: int) -> dict[str, float]:
    """Stage-1 test accuracy without prompts and with ``n_prompts`` at each scale of their initialisation."""
    split = json.loads((toy / "splits" / f"{task}.json").read_text())
    names = [name for _, name in sorted({(entry[1], entry[2]) for entry in split["train"] + split["test"]})]
    torch.manual_seed(0)
    model = NoLA(
        class_names=names,
        backbone="toy-clip",
        pretrained="promptlab",
        dino="toy-dino",
        descriptions_file=str(toy / "descriptions.json"),
        templates=TEMPLATES,
        n_prompts=n_prompts,
    ).eval()
    transform = test_transform(model.preprocess)
    images = torch.stack([transform(load_image(toy / "images" / entry[0])) for entry in split["test"]])
    labels = torch.tensor([entry[1] for entry in split["test"]])

    @torch.no_grad()
    def accuracy() -> float:
        logits = model.backbone.encode_image(images) @ model.stage1_weights.T
        return float((logits.argmax(-1) == labels).float().mean())

    with model.backbone.without_visual_prompts():
        row = {"no prompts": accuracy()}
    initial = model.visual_prompts.detach().clone()
    for scale in SCALES:
        with torch.no_grad():
            model.visual_prompts.copy_(initial * scale)
        row[f"x{scale:g}"] = accuracy()
    return row


def table(results: dict) -> str:
    """The Markdown table."""
    lines = [
        "| task | prompts | no prompts | " + " | ".join(f"initialisation x{s:g}" for s in SCALES) + " |",
        "|---|---|---|" + "---|" * len(SCALES),
    ]
    for r in results["runs"]:
        cells = " | ".join(f"{100 * r['accuracy'][f'x{s:g}']:.1f}" for s in SCALES)
        lines.append(f"| {r['task']} | {r['prompts']} | {100 * r['accuracy']['no prompts']:.1f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding toy/")
    parser.add_argument("--tasks", nargs="+", default=["shapes", "style_shift", "mixed"])
    parser.add_argument("--prompts", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    toy = Path(args.data_root).resolve() / "toy"
    runs = [
        {"task": task, "prompts": n, "accuracy": measure(toy, task, n)} for task in args.tasks for n in args.prompts
    ]
    results = {"commit": current_commit(), "runs": runs}
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
