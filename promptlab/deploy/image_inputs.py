"""What the Python API takes as images, checked the same way by the torch classifier and the ONNX
runtime (imports no torch): file paths, PIL images, image file bytes, HWC uint8 arrays (CHW uint8
tensors too), preprocessed (3, H, W) float arrays or tensors, an (N, 3, H, W) batch, or a list or
iterable of these. Anything else, NaN or infinite values and wrong shapes get one sentence naming
the argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from promptlab.data.images import decode_image_bytes, load_image
from promptlab.errors import UserError

ACCEPTED = (
    "a file path, a PIL image, image file bytes, an HWC uint8 array, a preprocessed (3, H, W) float array "
    "or tensor, an (N, 3, H, W) batch, or a list of them"
)
_CHANNELS = (1, 3, 4)


class ImageInputError(UserError):
    """An argument of the Python API that is not an image (or a batch size or top_k out of range)."""


def check_count(value: Any, name: str) -> int:
    """``top_k`` and ``batch_size`` are whole numbers of at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ImageInputError(f"{name} must be a whole number of at least 1 (got {value!r}).")
    return int(value)


def image_items(images: Any) -> list:
    """One image or several -> a list of single images (a 4-D batch is not split here)."""
    if images is None:
        raise ImageInputError(f"images is None; pass {ACCEPTED}.")
    if isinstance(images, (str, Path, bytes, bytearray, memoryview, Image.Image)) or hasattr(images, "ndim"):
        return [images]
    if isinstance(images, Iterable) and not isinstance(images, Mapping):
        return list(images)
    raise ImageInputError(f"images is of type {type(images).__name__}, not an image; pass {ACCEPTED}.")


def check_preprocessed(array: Any, size: int, name: str) -> None:
    """A preprocessed image (3, size, size) or batch (N, 3, size, size) of finite values.

    Raises:
        ImageInputError: another shape, or NaN or infinite values, naming ``name``.
    """
    shape = tuple(array.shape)
    if shape[-3:] != (3, size, size):
        expected = f"(N, 3, {size}, {size})" if len(shape) == 4 else f"(3, {size}, {size})"
        raise ImageInputError(
            f"{name} has shape {shape}, but this classifier takes preprocessed images of shape {expected}; "
            "pass file paths or PIL images to have them preprocessed."
        )
    finite = bool(array.isfinite().all()) if hasattr(array, "isfinite") else bool(np.isfinite(array).all())
    if not finite:
        raise ImageInputError(f"{name} contains NaN or infinite values; pass finite preprocessed values.")


def as_image(item: Any, name: str) -> Image.Image | None:
    """A raw image of any accepted kind -> a PIL image; None for a preprocessed (3, H, W) float array.

    Raises:
        ImageInputError: not an image; ImageLoadError: a file or bytes that cannot be decoded.
    """
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(item), name)[0]
    ndim, dtype = getattr(item, "ndim", None), str(getattr(item, "dtype", ""))
    if ndim is None:
        raise ImageInputError(f"{name} is of type {type(item).__name__}, not an image; pass {ACCEPTED}.")
    if dtype.endswith("uint8") and ndim in (2, 3):
        pixels = np.asarray(item.cpu() if hasattr(item, "cpu") else item)
        if ndim == 3 and pixels.shape[0] in _CHANNELS and pixels.shape[-1] not in _CHANNELS:
            pixels = pixels.transpose(1, 2, 0)  # CHW, as torchvision.io.read_image gives -> HWC
        if ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim == 3 and pixels.shape[-1] not in _CHANNELS:
            raise ImageInputError(f"{name} is a uint8 array of shape {pixels.shape}; pass HWC with 1, 3 or 4 channels.")
        return Image.fromarray(np.ascontiguousarray(pixels))
    if ndim == 3 and "float" in dtype:
        return None
    raise ImageInputError(
        f"{name} is a {ndim}-d {dtype or type(item).__name__} array; pass an HWC uint8 image or a preprocessed "
        "(3, H, W) float array."
    )


def image_batches(
    images: Any,
    batch_size: int,
    size: int,
    transform: Callable[[Image.Image], Any],
    convert: Callable[[Any], Any],
    stack: Callable[[list], Any],
) -> list:
    """Images in batches for an image encoder, every item checked.

    Args:
        images: any of :data:`ACCEPTED`; a 4-D batch is sliced as it is.
        batch_size: images per batch.
        size: the classifier's input size (H = W).
        transform: a PIL image -> a preprocessed (3, size, size) image.
        convert: a preprocessed array or tensor -> the kind ``stack`` takes (``torch.as_tensor``...).
        stack: (3, H, W) images -> (B, 3, H, W) (``torch.stack``, ``numpy.stack``).
    """
    batch_size = check_count(batch_size, "batch_size")
    if getattr(images, "ndim", 0) == 4:
        check_preprocessed(images, size, "images")
        return [convert(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    items = image_items(images)
    batches = []
    for start in range(0, len(items), batch_size):
        prepared = []
        for index, item in enumerate(items[start : start + batch_size], start):
            name = "images" if len(items) == 1 else f"images[{index}]"
            image = as_image(item, name)
            if image is None:
                check_preprocessed(item, size, name)
                prepared.append(convert(item))
            else:
                prepared.append(transform(image.convert("RGB")))
        batches.append(stack(prepared))
    return batches
