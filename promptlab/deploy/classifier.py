"""Loading an exported classifier and predicting with it: the deployment API."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from promptlab.backbone import BackboneError, FrozenCLIP, LoRASpec, PreprocessConfig
from promptlab.data.transforms import test_transform
from promptlab.deploy.calibration import Calibration
from promptlab.deploy.classifier_file import ClassifierFileError, read_classifier_file
from promptlab.deploy.heads import Head, HeadError, head_from_file
from promptlab.deploy.image_inputs import check_count, image_batches
from promptlab.deploy.open_set import Familiarity, OpenSet
from promptlab.deploy.prediction import Images, Prediction, rank
from promptlab.errors import UserError

__all__ = ["Classifier", "Prediction"]


class Classifier:
    """An exported promptlab classifier: one image-encoder pass plus its head per image.

    Use :meth:`load`; then :meth:`predict` or :meth:`predict_proba` on PIL images, file paths or
    preprocessed tensors. Probabilities are calibrated with the temperature recorded in the file
    (1.0 for files without one), and :meth:`predict` answers "none of these" to images unlike the
    training images (familiarity below the file's threshold, :mod:`promptlab.deploy.open_set`) and,
    where the file or the call sets one, below a top probability.
    """

    def __init__(self, backbone: FrozenCLIP, head: Head, meta: dict, familiarity: Familiarity | None = None):
        self.backbone = backbone
        self.head = head  # (B, D) normalised image features -> (B, C) logits
        self.familiarity = familiarity  # (B, D) image features -> (B,) familiarity; None in older files
        self.meta = meta
        self.class_names: list[str] = meta["class_names"]
        self.calibration = (
            Calibration.from_dict(meta["calibration"])
            if "calibration" in meta
            else Calibration(fitted_on="not calibrated: exported before promptlab calibrated classifiers")
        )
        self.reject_below: float | None = meta.get("reject_below")
        self.open_set = OpenSet.from_dict(meta["open_set"]) if familiarity is not None else None
        self.unfamiliar_below: float | None = None if self.open_set is None else self.open_set.unfamiliar_below
        self.preprocess = PreprocessConfig(
            **{**meta["preprocess"], "mean": tuple(meta["preprocess"]["mean"]), "std": tuple(meta["preprocess"]["std"])}
        )
        self.transform = test_transform(self.preprocess)  # PIL image -> (3, H, W), as promptlab evaluates

    @classmethod
    def load(cls, path: str | Path, weights_path: str | None = None, device: str | None = None) -> Classifier:
        """Loads a classifier file (any format version this promptlab reads).

        Args:
            path: the ``.safetensors`` file written by ``promptlab export``.
            weights_path: local backbone weights, for files exported without embedded weights on a
                machine that cannot download them.
            device: ``cpu``, ``cuda``... (default: CUDA when available).

        Raises:
            ClassifierFileError: the file is unreadable, modified, or made for other backbone weights.
        """
        meta, tensors = read_classifier_file(path)
        ref = meta["backbone"]
        try:
            head = head_from_file(meta["head"], tensors)
        except HeadError as error:
            raise ClassifierFileError(f"Classifier file {str(path)!r} is inconsistent: {error}") from error
        if (head.num_classes, head.feature_dim) != (len(meta["class_names"]), ref["embed_dim"]):
            raise ClassifierFileError(
                f"Classifier file {str(path)!r} is inconsistent: its head gives {head.num_classes} classes of "
                f"{head.feature_dim}-d features for {len(meta['class_names'])} class names and a {ref['embed_dim']}-d "
                "backbone; export it again."
            )
        familiarity = None
        if meta.get("open_set") and "open_set.reference" in tensors:
            try:
                familiarity = Familiarity(tensors["open_set.reference"], tensors["open_set.labels"], head.num_classes)
            except (KeyError, IndexError, RuntimeError, UserError) as error:
                raise ClassifierFileError(f"Classifier file {str(path)!r} is inconsistent: {error}") from error
        backbone = _rebuild_backbone(path, ref, tensors, weights_path, meta["preprocess"], head.needs_text_tower)
        head.attach(backbone)  # a head that runs the text tower (CoCoOp) keeps it
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(backbone.to(device), head.to(device), meta, None if familiarity is None else familiarity.to(device))

    @property
    def device(self) -> torch.device:
        """Where the image encoder runs."""
        return next(self.backbone.parameters()).device

    @property
    def temperature(self) -> float:
        """Logits are divided by it before the softmax (1.0: not calibrated)."""
        return self.calibration.temperature

    def _batches(self, images: Images, batch_size: int) -> list[torch.Tensor]:
        """Any images :meth:`predict_proba` takes -> checked (B, 3, H, W) batches."""
        return image_batches(images, batch_size, self.preprocess.size, self.transform, torch.as_tensor, torch.stack)

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, C) uncalibrated logits."""
        return self.head(self.head.encode(self.backbone, batch.to(self.device)))

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, C) calibrated probabilities, on the CPU."""
        return self._calibrated(self.logits(batch))

    @torch.no_grad()
    def scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) preprocessed images -> (B, C) calibrated probabilities and (B,) familiarity (None
        for a file without a familiarity reference), on the CPU, from one image-encoder pass.
        """
        encoded = self.head.encode(self.backbone, batch.to(self.device))  # (B, D)
        familiarity = None if self.familiarity is None else self.familiarity(encoded).cpu()
        return self._calibrated(self.head(encoded)), familiarity

    def _calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits / self.temperature).softmax(dim=-1).cpu()

    @torch.no_grad()
    def features_and_probabilities(self, images: Images, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (as :meth:`predict_proba` takes them) -> ((N, D) L2-normalised image features,
        (N, C) calibrated probabilities), on the CPU, from one image-encoder pass.
        """
        features, probabilities = [], []
        for batch in self._batches(images, batch_size):
            encoded = self.head.encode(self.backbone, batch.to(self.device))  # (B, D)
            features.append(F.normalize(encoded, dim=-1).cpu())
            probabilities.append(self._calibrated(self.head(encoded)))
        if not features:
            return torch.empty(0, self.head.feature_dim), torch.empty(0, len(self.class_names))
        return torch.cat(features), torch.cat(probabilities)

    def predict_proba(self, images: Images, batch_size: int = 64) -> torch.Tensor:
        """Calibrated class probabilities of images.

        Args:
            images: one image or a list (any iterable) of them: file paths, PIL images, image file
                bytes, HWC uint8 arrays, preprocessed (3, H, W) float tensors or arrays; or an
                (N, 3, H, W) batch.
            batch_size: images per image-encoder call.

        Returns:
            (N, C) probabilities, classes ordered as ``class_names``.

        Raises:
            ImageInputError: an argument that is not an image, has the wrong shape or non-finite values.
            ImageLoadError: a file that is missing or cannot be decoded.
        """
        probabilities = [self.probabilities(batch) for batch in self._batches(images, batch_size)]
        return torch.cat(probabilities) if probabilities else torch.empty(0, len(self.class_names))

    def predict(
        self,
        images: Images,
        top_k: int = 5,
        batch_size: int = 64,
        reject_below: float | None = None,
        unfamiliar_below: float | None = None,
    ) -> list[Prediction]:
        """Images -> one :class:`Prediction` per image, with the ``top_k`` most likely classes.

        Args:
            images: as :meth:`predict_proba` takes them.
            top_k: classes per prediction.
            batch_size: images per image-encoder call.
            reject_below: answer "none of these" when the best calibrated probability is below it
                (default: the threshold recorded at export, if any; 0 turns it off).
            unfamiliar_below: answer "none of these" when the image's familiarity is below it
                (default: the threshold fitted at export, if the file has one; -2 turns it off).
        """
        top_k = check_count(top_k, "top_k")
        threshold = self.reject_below if reject_below is None else reject_below  # rank checks both
        unfamiliar = self.unfamiliar_below if unfamiliar_below is None else unfamiliar_below
        scored = (self.scores(batch) for batch in self._batches(images, batch_size))
        return [p for probs, fam in scored for p in rank(probs, self.class_names, top_k, threshold, fam, unfamiliar)]


def _rebuild_backbone(
    path,
    ref: dict,
    tensors: dict[str, torch.Tensor],
    weights_path: str | None,
    preprocess: dict,
    needs_text_tower: bool = False,
) -> FrozenCLIP:
    """The image encoder the file was exported with (and the text tower, for a head that runs it):
    embedded in the file, or by reference and checksum, with the preprocessing the file records (the
    backbone's log then names it, not open_clip's defaults).
    """
    name = ref["model_name"]
    folder_here = name.startswith("hf-hub:") or (
        name.startswith("local-dir:") and Path(name.removeprefix("local-dir:")).is_dir()
    )
    if not ref["embedded"] and not ref["pretrained"] and ref["weights_sha256"] and not weights_path and not folder_here:
        raise ClassifierFileError(
            f"Classifier {str(path)!r} needs the weights file it was exported with ({ref['model_name']!r}, sha256 "
            f"{ref['weights_sha256'][:12]}...); pass weights_path (--weights_path on the command line)."
        )
    try:
        if ref["embedded"]:
            # The architecture (and, for a tag, its QuickGELU setting) without downloading any weights.
            backbone = FrozenCLIP(
                ref["model_name"], ref["pretrained"], model_cfg=ref.get("model_cfg"), load_weights=False
            )
            visual = {k.removeprefix("visual."): v for k, v in tensors.items() if k.startswith("visual.")}
            backbone.load_image_encoder_state(visual)  # with its visual prompts, where it has some (NoLA)
            if any(k.startswith("text.") for k in tensors) or needs_text_tower:
                backbone.load_text_encoder_state({k[5:]: v for k, v in tensors.items() if k.startswith("text.")})
        else:
            backbone = FrozenCLIP(
                ref["model_name"],
                ref["pretrained"],
                weights_path,
                preprocess=preprocess,
                model_cfg=ref.get("model_cfg"),
            )
        if ref.get("deep_prompts"):  # MaPLe: the image tower's fixed prompt tokens
            backbone.fix_image_deep_prompts(tensors["deep_prompts"])
        if ref.get("lora"):  # CLIP-LoRA: the recorded deltas added into the attention weights
            deltas = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
            backbone.merge_image_lora(LoRASpec.from_image_record(ref["lora"]), deltas)
    except (BackboneError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ClassifierFileError(
            f"Cannot rebuild backbone {ref['model_name']!r} for classifier {str(path)!r}: {error}"
        ) from error
    if backbone.embed_dim != ref["embed_dim"]:
        raise ClassifierFileError(
            f"Classifier {str(path)!r} was made for a {ref['embed_dim']}-d backbone, but {ref['model_name']!r} "
            f"gives {backbone.embed_dim}-d features; use the backbone it was exported with."
        )
    loaded_sha256 = backbone.weights_sha256() or ""
    if not ref["embedded"] and ref["weights_sha256"] and loaded_sha256 != ref["weights_sha256"]:
        raise ClassifierFileError(
            f"Classifier {str(path)!r} was exported with other weights for {ref['model_name']!r} "
            f"(sha256 {ref['weights_sha256'][:12]}..., loaded {loaded_sha256[:12]}...); "
            "pass the weights file it was trained with as weights_path."
        )
    return backbone
