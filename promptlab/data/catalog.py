"""Where the 11 standard few-shot datasets and the 4 ImageNet variants live and how CoOp reads them.

Paths follow CoOp's DATASETS.md: ``<root>/<folder>/`` holds the images and the ``split_zhou_*.json``
file (ImageNet and its variants: the images and ``classnames.txt``). Class-name rewrites and prompt
templates are those of the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class DatasetInfo:
    """How one standard dataset is laid out on disk.

    Attributes:
        folder: dataset folder under the data root.
        image_dir: folder (inside ``folder``) that split paths are relative to.
        layout: ``split`` (a CoOp split JSON), ``imagenet`` or ``fgvc_aircraft`` (their own files),
            ``imagenet_v2`` (class folders ``0``..``999`` in ImageNet's label order) or
            ``imagenet_wnids`` (class folders named by WordNet id; ImageNet-A and -R hold 200 of them).
        split_file: name of the split JSON inside ``folder``.
        template: the dataset's hand-written prompt (CoOp's ``CUSTOM_TEMPLATES``).
        renames: class-name rewrites applied when reading (reference ``NEW_CNAMES``).
    """

    folder: str
    image_dir: str
    layout: Literal["split", "imagenet", "fgvc_aircraft", "imagenet_v2", "imagenet_wnids"] = "split"
    split_file: str | None = None
    template: str = "a photo of a {}."
    renames: dict[str, str] = field(default_factory=dict)


EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}

STANDARD_DATASETS: dict[str, DatasetInfo] = {
    "imagenet": DatasetInfo("imagenet", "images", layout="imagenet"),
    "caltech101": DatasetInfo(
        "caltech-101",
        "101_ObjectCategories",
        split_file="split_zhou_Caltech101.json",
        renames={"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"},
    ),
    "oxford_pets": DatasetInfo(
        "oxford_pets", "images", split_file="split_zhou_OxfordPets.json", template="a photo of a {}, a type of pet."
    ),
    "stanford_cars": DatasetInfo("stanford_cars", "", split_file="split_zhou_StanfordCars.json"),
    "oxford_flowers": DatasetInfo(
        "oxford_flowers",
        "jpg",
        split_file="split_zhou_OxfordFlowers.json",
        template="a photo of a {}, a type of flower.",
    ),
    "food101": DatasetInfo(
        "food-101", "images", split_file="split_zhou_Food101.json", template="a photo of {}, a type of food."
    ),
    "fgvc_aircraft": DatasetInfo(
        "fgvc_aircraft", "images", layout="fgvc_aircraft", template="a photo of a {}, a type of aircraft."
    ),
    "sun397": DatasetInfo("sun397", "SUN397", split_file="split_zhou_SUN397.json"),
    "dtd": DatasetInfo("dtd", "images", split_file="split_zhou_DescribableTextures.json", template="{} texture."),
    "eurosat": DatasetInfo(
        "eurosat",
        "2750",
        split_file="split_zhou_EuroSAT.json",
        template="a centered satellite photo of {}.",
        renames=EUROSAT_RENAMES,
    ),
    "ucf101": DatasetInfo(
        "ucf101", "UCF-101-midframes", split_file="split_zhou_UCF101.json", template="a photo of a person doing {}."
    ),
}

# Domain generalisation: test sets of ImageNet's classes under shift, read as CoOp reads them (the
# classifier is ImageNet's; A and R keep the 200 classes they have, labelled in their sorted order).
IMAGENET_VARIANTS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
STANDARD_DATASETS |= {
    "imagenet_v2": DatasetInfo("imagenetv2", "imagenetv2-matched-frequency-format-val", layout="imagenet_v2"),
    "imagenet_sketch": DatasetInfo("imagenet-sketch", "images", layout="imagenet_wnids"),
    "imagenet_a": DatasetInfo("imagenet-adversarial", "imagenet-a", layout="imagenet_wnids"),
    "imagenet_r": DatasetInfo("imagenet-rendition", "imagenet-r", layout="imagenet_wnids"),
}
# The 10 datasets an ImageNet-trained classifier is tested on in the cross-dataset protocol.
CROSS_DATASET_TARGETS = (
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)

# The offline toy world (`promptlab.toy.world`), under <root>/toy/: shape classification in the main
# style, under a style shift (train filled, test photo) and over a mixture of styles.
TOY_TASKS = ("shapes", "style_shift", "mixed")
STANDARD_DATASETS |= {
    f"toy_{task}": DatasetInfo("toy", "images", split_file=f"splits/{task}.json", template="a photo of a {}.")
    for task in TOY_TASKS
}

# CoOp's IMAGENET_TEMPLATES_SELECT: the 7-template ensemble used for zero-shot CLIP baselines.
ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
