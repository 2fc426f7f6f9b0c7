"""Modules that moved into the layered packages stay importable by their old names.

Scripts and configs written for the flat layout (``from promptlab.classifier import Classifier``,
``class_path: promptlab.methods.base.CLIPClassifier``) keep working: importing an old name imports
the new module under it, with a DeprecationWarning that names the new place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "promptlab.backbone_source": "promptlab.backbone.source",
    "promptlab.backbone_weights": "promptlab.backbone.weights",
    "promptlab.shared_prefix": "promptlab.backbone.shared_prefix",
    "promptlab.methods.visual_prompts": "promptlab.backbone.visual_prompts",
    "promptlab.classifier": "promptlab.deploy.classifier",
    "promptlab.classifier_file": "promptlab.deploy.classifier_file",
    "promptlab.heads": "promptlab.deploy.heads",
    "promptlab.prediction": "promptlab.deploy.prediction",
    "promptlab.classify": "promptlab.deploy.classify",
    "promptlab.calibration": "promptlab.deploy.calibration",
    "promptlab.onnx_export": "promptlab.deploy.onnx_export",
    "promptlab.onnx_runtime": "promptlab.deploy.onnx_runtime",
    "promptlab.serving": "promptlab.deploy.serving",
    "promptlab.native_stderr": "promptlab.deploy.native_stderr",
    "promptlab.quickstart": "promptlab.cli.quickstart",
    "promptlab.active_selection": "promptlab.workspace.active_selection",
    "promptlab.methods.base": "promptlab.methods._base",
    "promptlab.methods.contract": "promptlab.methods._contract",
    "promptlab.methods.inspection": "promptlab.methods._inspection",
    "promptlab.methods.labeller": "promptlab.methods._labeller",
    "promptlab.methods.prompts": "promptlab.methods._prompts",
    "promptlab.methods.templates": "promptlab.methods._templates",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        public = "promptlab.methods" if "._" in new else new  # private helpers: their names are exported there
        warnings.warn(f"{spec.name} moved to {new}; import from {public}.", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old name of a moved module and hands back the new module."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader())


def install() -> None:
    """Adds the finder once (``import promptlab`` calls it)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
