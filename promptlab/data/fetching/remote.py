"""Where each standard dataset is downloaded from, with the checksum pinned for each file and its origin.

Every dataset but ImageNet comes from one host with a checksum that can be known before downloading:

- The ten CoOp datasets other than ImageNet: the prompt-learning mirror the PromptKD authors keep on
  the Hugging Face hub (``zhengli97/prompt_learning_dataset``), at a fixed commit. It is the one host
  that has CoOp's split files (``split_zhou_*.json``) and UCF101's mid-frames next to the images:
  CoOp's own copies of these are on Google Drive, and SUN397's, Stanford Cars' and Caltech101's
  original hosts are gone. A commit fixes each file's content, and the hub publishes each file's
  SHA-256 (its LFS object id) at that commit: where this catalog does not pin a SHA-256 itself, the
  fetch reads the hub's before downloading and checks the file against it.
- ImageNet-A and -R: their authors' Berkeley host, with the MD5 that torch-uncertainty pins.
- ImageNet-V2 and -Sketch: their authors' datasets on the hub (the hub's SHA-256, as above).
- ImageNet: its licence allows no redistribution; the user downloads it and ``fetch`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MIRROR_REPO = "zhengli97/prompt_learning_dataset"
MIRROR_REVISION = "ceb3112337fb6e1bf71534e355ca5569b63f19a6"
MIRROR_ORIGIN = "a third party's verification record of this commit of the mirror (downloaded and checked file by file)"
HUB_ORIGIN = "the hub's SHA-256 of the file at the pinned revision, read before downloading"
UNPINNED_ORIGIN = (
    "the hub's SHA-256 of the file on the repository's main branch, read before downloading; no commit is "
    "pinned (none could be looked up where this catalog was written), the fetch records the commit it read"
)


@dataclass(frozen=True)
class RemoteFile:
    """One file to download.

    Attributes:
        filename: the file's name on the host (and in the downloads folder).
        host: ``hub`` (a Hugging Face hub repository at ``revision``) or ``url`` (a plain URL); both are
            downloaded with huggingface_hub's HTTP client.
        repo: the hub repository (``hub``) or the URL (``url``).
        repo_type: the hub repository's type.
        revision: the hub commit (or branch, where no commit could be pinned) the file is read at.
        size: the file's size in bytes, where pinned.
        sha256: the file's SHA-256, where pinned.
        md5: the file's MD5, where pinned (hosts that publish MD5 only).
        origin: where the pinned checksum comes from.
    """

    filename: str
    host: Literal["hub", "url"]
    repo: str
    repo_type: Literal["model", "dataset"] = "model"
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    origin: str = HUB_ORIGIN

    @property
    def url(self) -> str:
        """The file's address, for messages and the manual route."""
        return self.url_at(None)

    def url_at(self, hub_endpoint: str | None) -> str:
        """The file's address, on ``hub_endpoint`` (``HF_ENDPOINT``: a mirror of the hub) for hub files."""
        if self.host == "url":
            return self.repo
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        endpoint = (hub_endpoint or "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{prefix}{self.repo}/resolve/{self.revision}/{self.filename}"

    @property
    def checksum(self) -> str:
        """The pinned checksum as ``algorithm:hex`` (``sha256 from the hub`` when it is read at fetch time)."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return "sha256 from the hub"


@dataclass(frozen=True)
class DatasetSource:
    """How one dataset is fetched and where its files go.

    Attributes:
        name: the dataset's name (``--data.dataset``).
        files: what to download (empty for ImageNet, which the user downloads).
        marker: a path inside the dataset folder that only a complete layout has; the extracted tree is
            searched for it and the folder that holds it becomes the dataset folder.
        size: the download's size, for ``data list`` (approximate where no size is pinned).
        licence: a one-line note on the terms; the dataset's page has them in full.
        homepage: the dataset's page (the manual route when a host is gone).
        renames: folders renamed inside the extracted tree before the marker is searched.
        imagenet_classes: write ImageNet's ``classnames.txt`` beside the images.
    """

    name: str
    files: tuple[RemoteFile, ...]
    marker: str
    size: str
    licence: str
    homepage: str
    renames: dict[str, str] = field(default_factory=dict)
    imagenet_classes: bool = False


def _mirror(filename: str, size: int | None = None, sha256: str | None = None) -> tuple[RemoteFile, ...]:
    origin = MIRROR_ORIGIN if sha256 else HUB_ORIGIN
    return (RemoteFile(filename, "hub", MIRROR_REPO, "model", MIRROR_REVISION, size, sha256, origin=origin),)


TORCH_UNCERTAINTY = "torch-uncertainty's ImageNet-A/-R datasets (commit 0d0df2b), which pin the authors' archive"
RESEARCH_ONLY = "non-commercial research and education only"

DATASET_SOURCES: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            "imagenet",
            (),
            "images/train",
            "about 147 GB",
            "ImageNet's terms of access: non-commercial research, after registering",
            "https://image-net.org/download-images.php",
            imagenet_classes=True,
        ),
        DatasetSource(
            "caltech101",
            _mirror("caltech-101.zip"),
            "split_zhou_Caltech101.json",
            "about 140 MB",
            "CC BY 4.0",
            "https://data.caltech.edu/records/mzrjq-6wc02",
        ),
        DatasetSource(
            "oxford_pets",
            _mirror("oxford_pets.zip"),
            "split_zhou_OxfordPets.json",
            "about 800 MB",
            "CC BY-SA 4.0",
            "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ),
        DatasetSource(
            "stanford_cars",
            _mirror(
                "stanford_cars.zip", 1_959_002_685, "50812812f33534ef2906b992762f96e8a5bb57b0eedc53800e91b7ed599abf8e"
            ),
            "split_zhou_StanfordCars.json",
            "1.96 GB",
            RESEARCH_ONLY,
            "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        ),
        DatasetSource(
            "oxford_flowers",
            _mirror("oxford_flowers.zip"),
            "split_zhou_OxfordFlowers.json",
            "about 350 MB",
            "no licence stated; research use",
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        ),
        DatasetSource(
            "food101",
            _mirror("food101.zip"),
            "split_zhou_Food101.json",
            "about 5 GB",
            "research use (images from foodspotting.com)",
            "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        ),
        DatasetSource(
            "fgvc_aircraft",
            _mirror("fgvc_aircraft.zip"),
            "variants.txt",
            "about 2.7 GB",
            RESEARCH_ONLY,
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        ),
        DatasetSource(
            "sun397",
            _mirror("sun397.zip", 39_182_693_483, "ce6dee6685c9f1d592c8297e193dde885aa9c50d008fd998a38ccc57a3dda722"),
            "split_zhou_SUN397.json",
            "39.2 GB",
            "research use",
            "https://vision.princeton.edu/projects/2010/SUN/",
        ),
        DatasetSource(
            "dtd",
            _mirror("dtd.zip"),
            "split_zhou_DescribableTextures.json",
            "about 600 MB",
            "research use",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        ),
        DatasetSource(
            "eurosat",
            _mirror("eurosat.zip"),
            "split_zhou_EuroSAT.json",
            "about 90 MB",
            "MIT",
            "https://github.com/phelber/eurosat",
        ),
        DatasetSource(
            "ucf101",
            _mirror("ucf101.zip", 140_164_538, "2fe1bd40e64408d02ff173badf744da557033ae6c75dd4ea51519366551f3ae6"),
            "split_zhou_UCF101.json",
            "140 MB",
            "research use",
            "https://www.crcv.ucf.edu/data/UCF101.php",
        ),
        DatasetSource(
            "imagenet_v2",
            (
                RemoteFile(
                    "imagenetv2-matched-frequency.tar.gz",
                    "hub",
                    "vaishaal/ImageNetV2",
                    "dataset",
                    origin=UNPINNED_ORIGIN,
                ),
            ),
            "imagenetv2-matched-frequency-format-val",
            "about 1.3 GB",
            "MIT (images under ImageNet's terms)",
            "https://github.com/modestyachts/ImageNetV2",
            imagenet_classes=True,
        ),
        DatasetSource(
            "imagenet_sketch",
            (
                RemoteFile(
                    "data/ImageNet-Sketch.zip", "hub", "songweig/imagenet_sketch", "dataset", origin=UNPINNED_ORIGIN
                ),
            ),
            "images",
            "about 8.4 GB",
            "MIT",
            "https://github.com/HaohanWang/ImageNet-Sketch",
            renames={"sketch": "images"},
            imagenet_classes=True,
        ),
        DatasetSource(
            "imagenet_a",
            (
                RemoteFile(
                    "imagenet-a.tar",
                    "url",
                    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
                    md5="c3e55429088dc681f30d81f4726b6595",
                    origin=TORCH_UNCERTAINTY,
                ),
            ),
            "imagenet-a",
            "about 690 MB",
            "MIT",
            "https://github.com/hendrycks/natural-adv-examples",
            imagenet_classes=True,
        ),
        DatasetSource(
            "imagenet_r",
            (
                RemoteFile(
                    "imagenet-r.tar",
                    "url",
                    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
                    md5="a61312130a589d0ca1a8fca1f2bd3337",
                    origin=TORCH_UNCERTAINTY,
                ),
            ),
            "imagenet-r",
            "about 2.1 GB",
            "MIT",
            "https://github.com/hendrycks/imagenet-r",
            imagenet_classes=True,
        ),
    )
}
