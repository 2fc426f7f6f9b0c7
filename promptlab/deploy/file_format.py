"""What kind of file a classifier path holds, by its first bytes, so a wrong suffix or a wrong file
gets a sentence that names what the file is (imports neither torch nor an image library).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

from promptlab.data.images import image_format_of
from promptlab.errors import UserError

ClassifierFormat = Literal["safetensors", "onnx"]
SUFFIXES: dict[ClassifierFormat, str] = {"safetensors": ".safetensors", "onnx": ".onnx"}
_WHAT = {
    "safetensors": "a promptlab classifier file (safetensors)",
    "onnx": "an ONNX model",
    "zip": "a zip archive, as PyTorch checkpoints are (export a checkpoint with `promptlab export --checkpoint`)",
    "image": "an image",
    "text": "a text file",
    "empty": "empty",
    "unknown": "not a classifier file",
}


class ClassifierPathError(UserError):
    """A classifier path that is missing, a folder, or holds another kind of file than its suffix says."""


def sniff(path: Path) -> str:
    """The kind of file by its first bytes: safetensors, onnx, zip, image, text, empty or unknown."""
    with path.open("rb") as file:
        head = file.read(16)
    if not head:
        return "empty"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"  # an 8-byte little-endian header length, then the JSON header
    if head[:1] == b"\x08" and len(head) > 2:
        return "onnx"  # a ModelProto begins with field 1 (ir_version) as a varint
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if image_format_of(head):
        return "image"
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        return "text"
    return "unknown"


def what_it_is(kind: str) -> str:
    """A kind from :func:`sniff` in words: "an ONNX model", "an image"..."""
    return _WHAT[kind]


def classifier_format(path: str | Path, option: str = "--classifier") -> ClassifierFormat:
    """The format of a classifier file, checked against its suffix.

    Args:
        path: a file written by ``promptlab export`` (``.safetensors`` or ``.onnx``).
        option: how the caller names the path in messages.

    Raises:
        ClassifierPathError: the path is missing or a folder, or the file is not a classifier of the
            format its suffix names (the message says what it is).
    """
    path = Path(path)
    if not path.exists():
        raise ClassifierPathError(
            f"{option} {str(path)!r} not found; check the path or export one with `promptlab export`."
        )
    if path.is_dir():
        raise ClassifierPathError(f"{option} {str(path)!r} is a folder; pass the classifier file inside it.")
    kind = sniff(path)
    suffix = path.suffix.lower()
    for name, expected in SUFFIXES.items():
        if suffix == expected and kind == name:
            return name
    if kind in SUFFIXES and suffix not in SUFFIXES.values():
        return kind  # an unusual suffix on a file of the right kind
    if kind in SUFFIXES:
        right = path.with_suffix(SUFFIXES[kind]).name
        raise ClassifierPathError(
            f"{option} {str(path)!r} is {_WHAT[kind]}, not what its suffix {suffix!r} says; rename it to {right!r}."
        )
    raise ClassifierPathError(
        f"{option} {str(path)!r} is {_WHAT[kind]}, not a classifier; pass a .safetensors or .onnx file "
        "written by `promptlab export`."
    )
