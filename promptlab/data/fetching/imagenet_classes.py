"""ImageNet's ``classnames.txt`` (``<wnid> <CLIP's class name>`` per line, in label order) and checks
of an ImageNet folder the user downloaded.

The WordNet ids come from timm's copy of ImageNet's synset list (also its 200-class A and R subsets)
and the names from open_clip: both are installed with promptlab, so nothing is downloaded.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from promptlab.data.dataset_error import DatasetError

CLASSNAMES_FILE = "classnames.txt"
# CLIP's list (and CoOp's classnames.txt, copied from it) names two pairs of classes alike, which
# promptlab refuses (their prompts would be identical): ImageNet's own names tell them apart. This
# differs from the papers on 2 of 1,000 classes.
DISAMBIGUATED = {"n04008634": "projectile", "n04355933": "sunglass"}
IMAGENET_HELP = (
    "ImageNet's licence does not allow promptlab to download it: register at "
    "https://image-net.org/download-images.php, download ILSVRC2012's train and validation images, "
    "sort the validation images into class folders, then run `promptlab data fetch imagenet "
    "--imagenet_dir FOLDER` with FOLDER holding train/ and val/."
)


def imagenet_wnids(subset: str = "") -> list[str]:
    """ImageNet's WordNet ids in label order, or the 200 of ImageNet-A (``subset="a"``) or -R (``"r"``)."""
    name = f"imagenet_{subset}_synsets.txt" if subset else "imagenet_synsets.txt"
    return files("timm.data._info").joinpath(name).read_text().split()


def write_classnames(folder: Path) -> Path:
    """Writes ``folder/classnames.txt`` for ImageNet's 1,000 classes; returns its path."""
    from promptlab.backbone import IMAGENET_CLASSNAMES  # open_clip, only when a file is written

    names = zip(imagenet_wnids(), IMAGENET_CLASSNAMES, strict=True)
    lines = [f"{wnid} {DISAMBIGUATED.get(wnid, name)}" for wnid, name in names]
    path = folder / CLASSNAMES_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def check_imagenet_folder(images: Path) -> None:
    """Checks that ``images`` holds ImageNet's ``train/`` and ``val/`` with a folder per class.

    Raises:
        DatasetError: a split or class folders are missing, naming what and the fix.
    """
    expected = set(imagenet_wnids())
    for split in ("train", "val"):
        folder = images / split
        if not folder.is_dir():
            raise DatasetError(f"ImageNet folder {str(images)!r} has no {split}/ folder. {IMAGENET_HELP}")
        missing = expected - {p.name for p in folder.iterdir() if p.is_dir()}
        if missing:
            raise DatasetError(
                f"ImageNet's {str(folder)!r} lacks {len(missing)} of the 1,000 class folders (e.g. {min(missing)}); "
                "sort its images into one folder per WordNet id (validation images too)."
            )
