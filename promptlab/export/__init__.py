"""From a trained method, a checkpoint or a run folder to an exported classifier file.

This layer sits between :mod:`promptlab.methods` (what was trained) and :mod:`promptlab.deploy`
(the file and what loads it); the command line and the app's workspace call it.
"""

from promptlab.export.method import CLASSIFIER_FILE_NAME, ExportError, export_classifier
from promptlab.export.run import change_classes, export_run, latest_checkpoint, load_method, open_set_for_classes

__all__ = [
    "CLASSIFIER_FILE_NAME",
    "ExportError",
    "change_classes",
    "export_classifier",
    "export_run",
    "latest_checkpoint",
    "load_method",
    "open_set_for_classes",
]
