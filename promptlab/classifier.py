"""Loading an exported classifier and predicting with it: the deployment API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from promptlab.backbone import BackboneError, FrozenCLIP, PreprocessConfig
from promptlab.classifier_file import ClassifierFileError, read_classifier_file
from promptlab.data.images import load_image
from promptlab.data.transforms import test_transform
from promptlab.mixture import mixture_logits, route
from promptlab.visual_prompts import install_visual_prompts


@dataclass
class Prediction:
    """One image's prediction: the best class, its probability, and the top-k (class, probability)."""

    label: str
    probability: float
    top_k: list[tuple[str, float]]


def _router(tensors: dict[str, torch.Tensor]) -> torch.nn.Linear | None:
    """The mixture-of-experts router stored as ``router.weight`` (E, D) and ``router.bias`` (E,), if any."""
    if "router.weight" not in tensors:
        return None
    weight = tensors["router.weight"]
    router = torch.nn.Linear(weight.shape[1], weight.shape[0])
    router.load_state_dict({"weight": weight, "bias": tensors["router.bias"]})
    return router.requires_grad_(False)


class Classifier:
    """An exported promptlab classifier: one image-encoder pass plus a matrix product per image.

    Use :meth:`load`; then :meth:`predict` or :meth:`predict_proba` on PIL images, file paths or
    preprocessed tensors.
    """

    def __init__(
        self,
        backbone: FrozenCLIP,
        class_features: torch.Tensor,
        logit_scale: torch.Tensor,
        meta: dict,
        router: torch.nn.Linear | None = None,
    ):
        self.backbone = backbone
        self.class_features = class_features  # (C, D), or (E, C, D) experts chosen per image by the router
        self.logit_scale = logit_scale
        self.router = router
        self.top_k = int(meta.get("hparams", {}).get("top_k", 1))
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
        router = _router(tensors)
        experts = features.shape[0] if features.dim() == 3 else None
        if features.shape[-2:] != (len(meta["class_names"]), ref["embed_dim"]) or (
            (experts is None) != (router is None) or (router is not None and router.out_features != experts)
        ):
            raise ClassifierFileError(
                f"Classifier file {str(path)!r} is inconsistent (class features {tuple(features.shape)})."
            )
        try:
            if ref["embedded"]:
                backbone = FrozenCLIP(ref["model_name"], pretrained=None)
                visual = {k.removeprefix("visual."): v for k, v in tensors.items() if k.startswith("visual.")}
                if "visual_prompts" in visual:  # a tower tuned with visual prompts (NoLA)
                    prompts = torch.nn.Parameter(torch.empty_like(visual["visual_prompts"]), requires_grad=False)
                    install_visual_prompts(backbone.model.visual, prompts)
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
        router = router.to(device) if router is not None else None
        return cls(backbone, features.to(device), tensors["logit_scale"].to(device), meta, router)

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
            image_features = self.backbone.encode_image(batch.to(self.device)).float()  # (B, D)
            if self.router is None:
                logits = self.logit_scale * image_features @ self.class_features.T
            else:
                weights, indices = route(self.router(image_features), self.top_k)
                logits = mixture_logits(image_features, self.class_features, weights, indices, self.logit_scale)
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
