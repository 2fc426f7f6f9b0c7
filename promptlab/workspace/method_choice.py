"""How the app's Train page offers the registered methods: grouped by what they learn from, each with
one sentence on what training it costs at the project's size.
"""

from __future__ import annotations

from promptlab.methods import CLIPClassifier

GROUPS = {  # learns_from -> what the Train page calls the group
    "labels": "Your labelled images",
    "names": "Class names only",
    "unlabelled": "Unlabelled images and names",
}


def method_groups(methods: dict[str, type[CLIPClassifier]], preselected: str) -> dict[str, list[str]]:
    """Group name -> method keys, in registry order; the preselected method's group first, and the
    preselected method first in it.
    """
    groups: dict[str, list[str]] = {}
    for key, cls in methods.items():
        groups.setdefault(GROUPS.get(cls.learns_from, cls.learns_from), []).append(key)
    first = next((name for name, keys in groups.items() if preselected in keys), None)
    if first is None:
        return groups
    groups[first].sort(key=lambda key: key != preselected)
    return {first: groups[first]} | {name: keys for name, keys in groups.items() if name != first}


def training_cost(method: type[CLIPClassifier], train_images: int) -> str:
    """One sentence on what an epoch of ``method`` does with ``train_images`` labelled images."""
    if not method.trains():
        return "Nothing to train: the classifier is ready in seconds."
    images = f"{train_images} training image{'s' if train_images != 1 else ''}"
    if not method.uses_epochs:
        return f"Fitted in one go on the CLIP features of your {images}: seconds after they are encoded."
    if method.image_encoder_per_step:
        which = "the unlabelled images" if method.learns_from == "unlabelled" else f"your {images}"
        return (
            f"Slower to train: every epoch runs CLIP's image encoder forwards and backwards over {which} "
            "(nothing can be cached), many times the cost of an epoch of the prompt methods."
        )
    cost = f"Your {images} are encoded by CLIP once; each epoch then trains on the cached features"
    if method.text_encoder_per_image:
        return f"{cost}, but runs CLIP's text encoder for every image (and for every image it classifies later)."
    return f"{cost}, so epochs are quick: the text encoder runs over your class prompts, not your images."
