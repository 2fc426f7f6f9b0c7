"""Prompt-learning methods, each a LightningModule over the shared frozen backbone, and their registry.

The registry is the only table of methods: the app, the worker, export and the benchmarks loop over
it. A method is one file under this package plus its configs; it joins the registry by being listed
below, or, from another package, through :func:`register_method` (or the ``promptlab.methods``
entry-point group, loaded on first use). A plugin imports its base and the contract's types
from here (``CLIPClassifier``, ``Setting``, ``Panel``...); the files starting with ``_`` are private.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from promptlab.methods._base import ClassChangeError, CLIPClassifier
from promptlab.methods._contract import Bars, MethodInfo, Panel, Setting, Table, Text, ToyDefaults
from promptlab.methods._feature_fitted import FeatureFitted
from promptlab.methods.clap import CLAP
from promptlab.methods.clip_lora import CLIPLoRA
from promptlab.methods.cocoop import CoCoOp
from promptlab.methods.coop import CoOp
from promptlab.methods.ivlp import IVLP
from promptlab.methods.kgcoop import KgCoOp
from promptlab.methods.linear_probe import LinearProbe
from promptlab.methods.maple import MaPLe
from promptlab.methods.mocoop import MoCoOp
from promptlab.methods.nola import NoLA
from promptlab.methods.prolip import ProLIP
from promptlab.methods.tip_adapter import TipAdapter, TipAdapterF
from promptlab.methods.zeroshot import ZeroShotCLIP

# key -> class, in the order the app lists them. The zero-shot baseline comes first.
METHODS: dict[str, type[CLIPClassifier]] = {}
BASELINE_KEY = ZeroShotCLIP.key  # what every learned classifier is compared with
DEFAULT_METHOD = CoOp.key  # what the app preselects
_entry_points_loaded = False


def register_method(cls: type[CLIPClassifier]) -> type[CLIPClassifier]:
    """Adds a method to the registry (usable as a class decorator); its ``key`` must be new."""
    if not cls.key or not cls.label:
        raise ValueError(f"Method {cls.__name__} needs a key and a label to be registered.")
    if METHODS.get(cls.key, cls) is not cls:
        raise ValueError(f"Method key {cls.key!r} is taken by {METHODS[cls.key].__name__}.")
    METHODS[cls.key] = cls
    return cls


def unregister_method(key: str) -> None:
    """Removes a method from the registry (tests and notebooks that registered one)."""
    METHODS.pop(key, None)


def registered_methods() -> dict[str, type[CLIPClassifier]]:
    """Every method, built-in ones first, then those of installed plugins (entry points)."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for entry in entry_points(group="promptlab.methods"):
            register_method(entry.load())
    return METHODS


def method_class(name: str) -> type[CLIPClassifier]:
    """The method with key (``coop``) or class name (``CoOp``, as checkpoints record) ``name``.

    Raises:
        KeyError: no such method, with the known keys in the message.
    """
    methods = registered_methods()
    if name in methods:
        return methods[name]
    for cls in methods.values():
        if cls.__name__ == name:
            return cls
    raise KeyError(f"Unknown method {name!r}; registered: {', '.join(methods)}.")


# Grouped on the Train page by what they learn from (promptlab.workspace.method_choice); this order within a group.
_BUILT_IN = (
    ZeroShotCLIP,
    CoOp,
    CoCoOp,
    KgCoOp,
    MaPLe,
    IVLP,
    MoCoOp,
    NoLA,
    CLIPLoRA,
    LinearProbe,
    CLAP,
    ProLIP,
    TipAdapter,
)
for _cls in (*_BUILT_IN, TipAdapterF):
    register_method(_cls)

__all__ = [
    "BASELINE_KEY",
    "CLAP",
    "DEFAULT_METHOD",
    "IVLP",
    "METHODS",
    "Bars",
    "CLIPClassifier",
    "CLIPLoRA",
    "ClassChangeError",
    "CoCoOp",
    "CoOp",
    "FeatureFitted",
    "KgCoOp",
    "LinearProbe",
    "MaPLe",
    "MethodInfo",
    "MoCoOp",
    "NoLA",
    "Panel",
    "ProLIP",
    "Setting",
    "Table",
    "Text",
    "TipAdapter",
    "TipAdapterF",
    "ToyDefaults",
    "ZeroShotCLIP",
    "method_class",
    "register_method",
    "registered_methods",
    "unregister_method",
]
