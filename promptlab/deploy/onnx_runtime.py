"""Running an exported ONNX classifier with onnxruntime, numpy and PIL only (no torch).

Install on the deployment machine::

    pip install onnxruntime numpy pillow && pip install --no-deps promptlab_clip-*.whl

(the wheel of promptlab's distribution, ``promptlab-clip``), then::

    from promptlab.deploy.onnx_runtime import OnnxClassifier

    classifier = OnnxClassifier("classifier.onnx")
    predictions = classifier.predict(["a.jpg", "b.png"], top_k=3)

Images are decoded with the same checks as everywhere in promptlab (:mod:`promptlab.data.images`)
and preprocessed exactly as promptlab's test transform (torchvision's ``Resize`` of the shorter side,
``CenterCrop``, ``ToTensor``, ``Normalize`` on PIL images), here in PIL and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from promptlab.data.images import ImageLoadError, load_image
from promptlab.deploy.image_inputs import check_count, image_batches
from promptlab.deploy.prediction import Images, Prediction, rank
from promptlab.deploy.prediction_files import FileResult
from promptlab.deploy.progress import progress_bar
from promptlab.errors import UserError

ONNX_FORMAT = "promptlab-onnx-classifier"  # as written by promptlab.deploy.onnx_export
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class OnnxClassifierError(UserError):
    """An ONNX file is missing, unreadable or not a promptlab classifier; the message says what to do."""


def preprocess_image(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float], interpolation: str
) -> np.ndarray:
    """A PIL image -> (3, size, size) float32, as torchvision's Resize(size) + CenterCrop + ToTensor + Normalize.

    The rounding follows torchvision: the longer side becomes ``int(size * long / short)`` and the
    crop offset ``int(round((side - size) / 2))`` (Python's round-half-to-even).
    """
    image = image.convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    if new_size != (width, height):
        image = image.resize(new_size, _RESAMPLE[interpolation])
    left, top = round((new_size[0] - size) / 2.0), round((new_size[1] - size) / 2.0)
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)  # (3, H, W) in [0, 1]
    mean32, std32 = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return (array - mean32) / std32


class OnnxClassifier:
    """A classifier file written by ``promptlab export -o classifier.onnx``.

    Args:
        path: the ``.onnx`` file.
        providers: onnxruntime execution providers (default: CUDA when onnxruntime-gpu has it, else CPU).
        threads: intra-op threads (default: onnxruntime's choice).

    Raises:
        OnnxClassifierError: missing, unreadable, or not a promptlab classifier.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise OnnxClassifierError(f"ONNX classifier {str(path)!r} does not exist; check the path.")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = onnxruntime.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map["promptlab"])
            assert self.meta.get("format") == ONNX_FORMAT
        except (KeyError, ValueError, AssertionError) as error:
            raise OnnxClassifierError(
                f"{str(path)!r} is not a promptlab ONNX classifier; write one with `promptlab export ... -o x.onnx`."
            ) from error
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail...)
            raise OnnxClassifierError(
                f"ONNX classifier {str(path)!r} cannot be read ({type(error).__name__}); export it again."
            ) from error
        self.class_names: list[str] = self.meta["class_names"]
        self.preprocess: dict = self.meta["preprocess"]
        self.temperature: float = self.meta["calibration"]["temperature"]  # already applied inside the graph
        self.reject_below: float | None = self.meta.get("reject_below")
        self.open_set: dict | None = self.meta.get("open_set")  # the familiarity rule, computed in the graph
        self.unfamiliar_below: float | None = self.open_set["unfamiliar_below"] if self.open_set else None
        self._input = self.session.get_inputs()[0].name
        self._has_familiarity = len(self.session.get_outputs()) > 1

    def to_array(self, image: Image.Image) -> np.ndarray:
        """A PIL image -> (3, H, W) float32, preprocessed as the classifier was trained."""
        p = self.preprocess
        return preprocess_image(image, p["size"], p["mean"], p["std"], p["interpolation"])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 preprocessed images -> (B, C) calibrated probabilities."""
        return self.scores(batch)[0]

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 3, H, W) float32 preprocessed images -> (B, C) calibrated probabilities and (B,) familiarity
        (None for a file without a familiarity reference).
        """
        outputs = self.session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})
        return outputs[0], outputs[1] if self._has_familiarity else None

    def predict_proba(self, images: Images, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities.

        Args:
            images: one image or a list (any iterable) of them: file paths, PIL images, image file
                bytes, HWC uint8 arrays or preprocessed (3, H, W) float arrays; or an (N, 3, H, W) array.
            batch_size: images per graph call.

        Returns:
            (N, C) probabilities, classes ordered as ``class_names``.

        Raises:
            ImageInputError: an argument that is not an image, has the wrong shape or non-finite values.
            ImageLoadError: a file that is missing or cannot be decoded.
        """
        batches = image_batches(images, batch_size, self.preprocess["size"], self.to_array, np.asarray, np.stack)
        parts = [self.probabilities(batch) for batch in batches]
        return np.concatenate(parts) if parts else np.empty((0, len(self.class_names)), np.float32)

    def predict(
        self,
        images: Images,
        top_k: int = 5,
        batch_size: int = 64,
        reject_below: float | None = None,
        unfamiliar_below: float | None = None,
    ) -> list[Prediction]:
        """One :class:`~promptlab.deploy.prediction.Prediction` per image; "none of these" below
        ``unfamiliar_below`` familiarity (default: the threshold fitted at export; -2 turns it off) or
        ``reject_below`` top probability (default: the threshold recorded at export; 0 turns it off).
        """
        top_k = check_count(top_k, "top_k")
        threshold = self.reject_below if reject_below is None else reject_below  # rank checks both
        unfamiliar = self.unfamiliar_below if unfamiliar_below is None else unfamiliar_below
        batches = image_batches(images, batch_size, self.preprocess["size"], self.to_array, np.asarray, np.stack)
        scored = (self.scores(batch) for batch in batches)
        return [p for probs, fam in scored for p in rank(probs, self.class_names, top_k, threshold, fam, unfamiliar)]

    def classify_files(
        self,
        paths: list[str],
        batch_size: int = 64,
        top_k: int = 3,
        reject_below: float | None = None,
        progress: bool = True,
        unfamiliar_below: float | None = None,
    ) -> Iterator[FileResult]:
        """``promptlab classify`` on an ONNX file: yields ``(path, prediction)`` per image in input order,
        and the reason (one sentence naming the file) for each unreadable file.
        """
        threshold = self.reject_below if reject_below is None else reject_below
        unfamiliar = self.unfamiliar_below if unfamiliar_below is None else unfamiliar_below
        with progress_bar(len(paths), "classify", progress) as bar:
            for start in range(0, len(paths), batch_size):
                readable, arrays = [], []
                for path in paths[start : start + batch_size]:
                    try:
                        arrays.append(self.to_array(load_image(path)))
                        readable.append(path)
                    except ImageLoadError as error:  # this file's refusal, never the run's end
                        yield str(error)
                if arrays:
                    probabilities, familiarity = self.scores(np.stack(arrays))
                    predictions = rank(probabilities, self.class_names, top_k, threshold, familiarity, unfamiliar)
                    yield from zip(readable, predictions, strict=True)
                bar.update(len(paths[start : start + batch_size]))
