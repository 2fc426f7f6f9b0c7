"""What the Python API takes as images, the same for the torch classifier and the ONNX runtime: the
kinds users pass are accepted with the same answer, anything else is one sentence naming the argument."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from promptlab.data.images import ImageLoadError
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.image_inputs import ImageInputError
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.export import export_classifier
from tests.builders import BUILDERS


@pytest.fixture(scope="module", params=["torch", "onnx"])
def classifier(request, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("inputs")
    model = BUILDERS["CoOp"][0]().eval()
    if request.param == "torch":
        return Classifier.load(export_classifier(model, folder / "c.safetensors"), device="cpu")
    return OnnxClassifier(export_classifier(model, folder / "c.onnx"))


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("picture") / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def as_kinds(path: Path) -> dict:
    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image)
    return {
        "path": str(path),
        "Path": path,
        "PIL image": image,
        "bytes": path.read_bytes(),
        "HWC uint8 array": pixels,
        "CHW uint8 tensor": torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(),
        "generator": (p for p in [str(path)]),
        "tuple": (image,),
    }


def test_every_accepted_kind_gives_the_same_answer(classifier, picture):
    expected = classifier.predict_proba(str(picture))
    for kind, images in as_kinds(picture).items():
        got = classifier.predict_proba(images)
        assert got.shape == expected.shape and np.allclose(np.asarray(got), np.asarray(expected), atol=1e-5), kind


def test_preprocessed_arrays_and_batches_pass_through(classifier):
    size = 32
    single = np.zeros((3, size, size), np.float32)
    batch = np.zeros((2, 3, size, size), np.float32)
    assert len(classifier.predict([single, single])) == 2
    assert len(classifier.predict(batch)) == 2
    assert len(classifier.predict(torch.zeros(3, size, size) if isinstance(classifier, Classifier) else single)) == 1


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (None, "images is None"),
        (5, "images is of type int"),
        ({"a": 1}, "images is of type dict"),
        ([None], "images is of type NoneType"),
        ([np.zeros((3, 32, 32), np.float32), 3.5], "images is of type float"),  # named images[1]
        (np.full((3, 32, 32), np.nan, np.float32), "contains NaN or infinite values"),
        (np.full((2, 3, 32, 32), np.inf, np.float32), "contains NaN or infinite values"),
        (np.zeros((3, 10, 10), np.float32), "has shape (3, 10, 10)"),
        (np.zeros((4, 4, 32, 32), np.float32), "has shape (4, 4, 32, 32)"),
        (np.zeros((5, 5, 5, 5, 5), np.uint8), "5-d"),
        (np.zeros((20, 20, 7), np.uint8), "pass HWC with 1, 3 or 4 channels"),
    ],
)
def test_what_is_not_an_image_is_one_sentence_naming_the_argument(classifier, images, words):
    with pytest.raises(ImageInputError) as caught:
        classifier.predict(images)
    message = str(caught.value)
    if isinstance(images, list) and len(images) == 2:
        message = message.replace("images[1]", "images")
    assert words in message and message.count(". ") == 0, message


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_top_k_below_one_is_refused(classifier, picture, top_k):
    with pytest.raises(ImageInputError, match="top_k must be a whole number of at least 1"):
        classifier.predict(str(picture), top_k=top_k)


def test_missing_files_are_not_found_and_folders_are_named(classifier, picture, tmp_path):
    with pytest.raises(ImageLoadError, match=r"'.*missing.png' not found; check the path"):
        classifier.predict(str(tmp_path / "missing.png"))
    with pytest.raises(ImageLoadError, match="is a folder, not an image file"):
        classifier.predict(tmp_path)
    with pytest.raises(ImageLoadError, match="Cannot read image 'images'"):
        classifier.predict(b"not an image")
    with pytest.raises(ImageLoadError, match=r"Cannot read image 'images\[1\]'"):
        classifier.predict([picture.read_bytes(), b"y"])
