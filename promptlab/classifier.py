"""Loading an exported classifier and predicting with it: the deployment API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from promptlab.backbone import BackboneError, FrozenCLIP, PreprocessConfig
from promptlab.classifier_file import ClassifierFileError, read_classifier_file
from promptlab.data.images import load_image
from promptlab.data.transforms import test_transform


@dataclass
class Prediction:
    """One image's prediction: the best class, its probability, and the top-k (class, probability)."""

    label: str
    probability: float
    top_k: list[tuple[str, float]]


class Classifier:
    """An exported promptlab classifier: one image-encoder pass plus a matrix product per image.

    Use :meth:`load`; then :meth:`predict` or :meth:`predict_proba` on PIL images, file paths or
    preprocessed tensors.
    """

    def __init__(self, backbone: FrozenCLIP, class_features: torch.Tensor, logit_scale: torch.Tensor, meta: dict):
        self.backbone = backbone
        self.class_features = class_features  # (C, D), normalised
        self.logit_scale = logit_scale
        self.meta = meta
        self.class_names: list[str] = meta["class_names"]
        self.preprocess = PreprocessConfig(
            **{**meta["preprocess"], "mean": tuple(meta["preprocess"]["mean"]), "std": tuple(meta["preprocess"]["std"])}
        )
        self._transform = test_transform(self.preprocess)

    @classmethod
    def load(cls, path: str | Path, weights_path: str | None = None, device: str | None = None) -> Classifier:
        """Loads a classifier file.

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
        features = tensors["class_features"]
        if features.dim() != 2 or features.shape != (len(meta["class_names"]), ref["embed_dim"]):
            raise ClassifierFileError(
                f"Classifier file {str(path)!r} is inconsistent (class features {tuple(features.shape)})."
            )
        try:
            if ref["embedded"]:
                backbone = FrozenCLIP(ref["model_name"], pretrained=None)
                visual = {k.removeprefix("visual."): v for k, v in tensors.items() if k.startswith("visual.")}
                backbone.model.visual.load_state_dict(visual)
            else:
                backbone = FrozenCLIP(ref["model_name"], ref["pretrained"], weights_path)
        except (BackboneError, RuntimeError) as error:
            raise ClassifierFileError(
                f"Cannot rebuild backbone {ref['model_name']!r} for classifier {str(path)!r}: {error}"
            ) from error
        if backbone.embed_dim != ref["embed_dim"]:
            raise ClassifierFileError(
                f"Classifier {str(path)!r} was made for a {ref['embed_dim']}-d backbone, but {ref['model_name']!r} "
                f"gives {backbone.embed_dim}-d features; use the backbone it was exported with."
            )
        if not ref["embedded"] and ref["weights_sha256"] and backbone.weights_sha256() != ref["weights_sha256"]:
            raise ClassifierFileError(
                f"Classifier {str(path)!r} was exported with other weights for {ref['model_name']!r} "
                f"(sha256 {ref['weights_sha256'][:12]}..., loaded {backbone.weights_sha256()[:12]}...); "
                "pass the weights file it was trained with as weights_path."
            )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        backbone.to(device)
        return cls(backbone, features.to(device), tensors["logit_scale"].to(device), meta)

    @property
    def device(self) -> torch.device:
        return self.class_features.device

    def _to_tensor(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image
        if isinstance(image, (str, Path)):
            image = load_image(image)
        return self._transform(image.convert("RGB"))

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 64) -> torch.Tensor:
        """Class probabilities of images.

        Args:
            images: one or a list of PIL images, file paths or preprocessed (3, H, W) tensors, or an
                (N, 3, H, W) batch.
            batch_size: images per image-encoder call.

        Returns:
            (N, C) probabilities, classes ordered as ``class_names``.
        """
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            batches = list(images.split(batch_size))
        else:
            items = images if isinstance(images, (list, tuple)) else [images]
            batches = [
                torch.stack([self._to_tensor(x) for x in items[i : i + batch_size]])
                for i in range(0, len(items), batch_size)
            ]
        probabilities = []
        for batch in batches:
            image_features = self.backbone.encode_image(batch.to(self.device))  # (B, D)
            logits = self.logit_scale * image_features.float() @ self.class_features.T
            probabilities.append(logits.softmax(dim=-1).cpu())
        return torch.cat(probabilities) if probabilities else torch.empty(0, len(self.class_names))

    def predict(self, images, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Images -> one :class:`Prediction` per image, with the ``top_k`` most likely classes."""
        probabilities = self.predict_proba(images, batch_size)
        top = probabilities.topk(min(top_k, len(self.class_names)), dim=-1)
        return [
            Prediction(
                self.class_names[int(indices[0])],
                float(values[0]),
                [(self.class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)],
            )
            for values, indices in zip(top.values, top.indices, strict=True)
        ]
