"""Label these next: which unlabelled images of a project to label first, and labelling them.

The classifier that ranks them is the newest finished run's when it has the project's classes,
else zero-shot CLIP on the class names (so it works before any run). Images are ranked by
:func:`promptlab.workspace.active_selection.rank_for_labelling` (uncertain, and far from what is labelled
and from each other). Assigning a class moves the image from the pool into the class (it keeps its
content-hash name, and the next run's DVC snapshot records it); "none of these" and "skip" set it
aside in ``labelling.json`` so that it is not suggested again.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.files import atomic_write_bytes
from promptlab.methods import ZeroShotCLIP
from promptlab.workspace.active_selection import margins, rank_for_labelling
from promptlab.workspace.project import Project, ProjectError
from promptlab.workspace.run_record import CLASSIFIER_FILE, SETTINGS_FILE, RunSettings, read_json
from promptlab.workspace.runs import list_runs

SET_ASIDE_FILE = "labelling.json"  # {"none_of_these": [file names], "skipped": [file names]}
SetAside = Literal["none_of_these", "skipped"]


@dataclass(frozen=True)
class Suggestion:
    """One pool image to label: the classifier's guess, its calibrated probability and the margin
    to the runner-up (small: the classifier hesitates).
    """

    path: Path
    guess: str
    probability: float
    margin: float


def ranking_classifier(project: Project, device: str = "cpu") -> tuple[Classifier, str]:
    """(classifier, a sentence saying which) that ranks the pool: the newest finished run with the
    project's classes, else zero-shot CLIP on the class names with the newest run's (or the default)
    backbone.
    """
    classes = project.classes()
    if len(classes) < 2:
        raise ProjectError(f"Project {project.name!r} needs at least 2 classes before images can be suggested.")
    runs = list_runs(project)
    for record in runs:
        path = project.runs_dir / record["id"] / CLASSIFIER_FILE
        if record.get("status") == "finished" and path.is_file():
            classifier = Classifier.load(path, device=device)
            if classifier.class_names == classes:
                return classifier, f"the classifier of run {record['id']}"
    chosen = [read_json(project.runs_dir / r["id"] / SETTINGS_FILE) for r in runs] + [asdict(RunSettings())]
    settings = next(s for s in chosen if s.get("backbone"))
    name, pretrained = settings["backbone"], settings.get("pretrained")
    return _zero_shot(classes, name, pretrained, device), f"zero-shot CLIP ({name}) on the class names"


def _zero_shot(classes: list[str], backbone: str, pretrained: str | None, device: str) -> Classifier:
    model = ZeroShotCLIP(class_names=classes, backbone=backbone, pretrained=pretrained)
    with tempfile.TemporaryDirectory() as folder:
        return Classifier.load(export_classifier(model, Path(folder) / "zero-shot.safetensors"), device=device)


def suggest_labels(
    project: Project, classifier: Classifier, count: int = 8, memo: dict[str, tuple] | None = None
) -> list[Suggestion]:
    """The ``count`` pool images to label next, best first (set-aside images excluded).

    Args:
        project: the project whose unlabelled pool is ranked.
        classifier: the classifier that ranks it.
        count: how many images to suggest.
        memo: file name -> (features, probabilities) of images encoded earlier with this classifier;
            filled here, so that after labelling one image only new uploads are encoded again.
    """
    aside = set_aside(project)
    pool = [p for p in project.images(None) if p.name not in aside["none_of_these"] + aside["skipped"]]
    if not pool:
        return []
    labelled = [p for name in project.classes() for p in project.images(name)]
    memo = {} if memo is None else memo
    missing = [p for p in pool + labelled if p.name not in memo]
    if missing:
        features, probabilities = classifier.features_and_probabilities(missing)
        memo.update({p.name: (f, q) for p, f, q in zip(missing, features, probabilities, strict=True)})
    features = torch.stack([memo[p.name][0] for p in pool])  # (N, D)
    probabilities = torch.stack([memo[p.name][1] for p in pool])  # (N, C)
    labelled_features = torch.stack([memo[p.name][0] for p in labelled]) if labelled else None
    order = rank_for_labelling(probabilities, features, labelled_features, count)
    gaps = margins(probabilities)
    return [
        Suggestion(
            pool[i],
            classifier.class_names[int(probabilities[i].argmax())],
            float(probabilities[i].max()),
            float(gaps[i]),
        )
        for i in order
    ]


def set_aside(project: Project) -> dict[str, list[str]]:
    """File names of pool images marked "none of these" or skipped."""
    try:
        content = json.loads((project.path / SET_ASIDE_FILE).read_text())
    except (OSError, ValueError):
        content = {}
    return {key: [str(name) for name in content.get(key, [])] for key in ("none_of_these", "skipped")}


def put_aside(project: Project, image: Path, why: SetAside) -> None:
    """Marks a pool image "none of these" or skipped: it stays in the pool, and is not suggested again."""
    if not (project.unlabelled_dir / image.name).is_file():
        raise ProjectError(f"{image.name!r} is not in the unlabelled pool of project {project.name!r} (any more).")
    with project.changing():
        marks = set_aside(project)
        if image.name not in marks[why]:
            marks[why].append(image.name)
        atomic_write_bytes(project.path / SET_ASIDE_FILE, json.dumps(marks, indent=2).encode())
