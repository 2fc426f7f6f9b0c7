"""Bulk classification on Ray Data (``promptlab classify --engine ray``): the same inputs, decoder,
refusals and predictions as :mod:`promptlab.deploy.classify`, spread over a pool of actors that each
load the classifier file once (a GPU each where there are GPUs).

With ``RAY_ADDRESS`` set, the job joins that cluster; without, Ray starts a local one. Rows come back
in input order (Ray Data's ``preserve_order``), so the output is the local path's, row for row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

from promptlab.data.ray_cluster import actor_pool_plan, import_ray
from promptlab.deploy.file_format import classifier_format
from promptlab.deploy.prediction import Prediction


class ClassifyActor:
    """One actor of the pool: loads the classifier once, then classifies batches of paths.

    Args:
        classifier: the classifier file (.safetensors or .onnx).
        weights_path: backbone weights for a .safetensors file that does not embed them.
        device: torch device for a .safetensors file (default: the actor's GPU, else the CPU).
        top_k: classes per prediction.
        reject_below: "none of these" below this top probability (None: the file's own).
        unfamiliar_below: "none of these" below this familiarity (None: the file's own).
    """

    def __init__(
        self,
        classifier: str,
        weights_path: str | None,
        device: str | None,
        top_k: int,
        reject_below: float | None,
        unfamiliar_below: float | None,
    ) -> None:
        self.top_k = top_k
        self.classifier: Any  # an OnnxClassifier or a Classifier: the same scores() and thresholds
        if classifier_format(classifier) == "onnx":
            from promptlab.deploy.onnx_runtime import OnnxClassifier

            self.classifier = OnnxClassifier(classifier)
            self.onnx = True
        else:
            from promptlab.deploy.classifier import Classifier

            self.classifier = Classifier.load(classifier, weights_path, device)
            self.onnx = False
        self.reject_below = self.classifier.reject_below if reject_below is None else reject_below
        self.unfamiliar_below = self.classifier.unfamiliar_below if unfamiliar_below is None else unfamiliar_below

    def _preprocess(self, image: Image.Image) -> Any:
        """A PIL image -> the runtime's input: a numpy array (ONNX) or a tensor (torch)."""
        return self.classifier.to_array(image) if self.onnx else self.classifier.transform(image)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"index", "path"}`` columns -> ``{"index", "path", "prediction", "error"}`` (JSON, or "")."""
        from promptlab.data.images import ImageLoadError, load_image
        from promptlab.deploy.prediction import rank

        readable, inputs, errors = [], [], [""] * len(batch["path"])
        for row, path in enumerate(batch["path"]):
            try:
                inputs.append(self._preprocess(load_image(str(path))))
                readable.append(row)
            except ImageLoadError as error:  # the file's refusal, never the job's end
                errors[row] = str(error)
        predictions = [""] * len(errors)
        if inputs:
            if self.onnx:
                probabilities, familiarity = self.classifier.scores(np.stack(inputs))
            else:
                import torch

                probabilities, familiarity = self.classifier.scores(torch.stack(inputs))
            ranked = rank(
                probabilities,
                self.classifier.class_names,
                self.top_k,
                self.reject_below,
                familiarity,
                self.unfamiliar_below,
            )
            for row, prediction in zip(readable, ranked, strict=True):
                predictions[row] = json.dumps(asdict(prediction))
        return {
            "index": batch["index"],
            "path": batch["path"],
            "prediction": np.array(predictions, dtype=object),
            "error": np.array(errors, dtype=object),
        }


def _prediction(text: str) -> Prediction:
    fields = json.loads(text)
    fields["top_k"] = [tuple(pair) for pair in fields["top_k"]]
    return Prediction(**fields)


def ray_classify_files(
    classifier: str,
    paths: list[str],
    batch_size: int = 64,
    concurrency: int | None = None,
    top_k: int = 3,
    reject_below: float | None = None,
    unfamiliar_below: float | None = None,
    weights_path: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Iterator[tuple[str, Prediction] | str]:
    """What :func:`promptlab.deploy.classify.classify_files` yields, computed on Ray Data.

    Args:
        classifier: the classifier file.
        paths: image files (or URIs the decoder reads).
        batch_size: images per actor call.
        concurrency: actors in the pool (default: one per GPU, else 2).
        top_k: classes per prediction.
        reject_below: "none of these" below this top probability (default: the file's own).
        unfamiliar_below: "none of these" below this familiarity (default: the file's own).
        weights_path: backbone weights for a .safetensors file that does not embed them.
        device: torch device of each actor (default: its GPU where it has one).
        progress: Ray Data's progress bars.

    Yields:
        ``(path, prediction)`` per classified image and the reason per unreadable file, in input order.
    """
    ray = import_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    blocks, pool = actor_pool_plan(len(paths), batch_size, concurrency, gpus)
    dataset = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)], override_num_blocks=blocks)
    results = dataset.map_batches(
        ClassifyActor,
        fn_constructor_kwargs={
            "classifier": str(classifier),
            "weights_path": weights_path,
            "device": device,
            "top_k": top_k,
            "reject_below": reject_below,
            "unfamiliar_below": unfamiliar_below,
        },
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_gpus=1 if gpus else 0,
        batch_format="numpy",
    )
    for row in results.iter_rows():
        if row["error"]:
            yield str(row["error"])
        else:
            yield str(row["path"]), _prediction(str(row["prediction"]))
