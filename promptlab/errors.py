"""The errors a user can cause; the CLI reports them in one line instead of a traceback."""

from promptlab.backbone import BackboneError
from promptlab.classifier_file import ClassifierFileError
from promptlab.data.images import ImageLoadError
from promptlab.data.sources import DatasetError
from promptlab.export import ExportError
from promptlab.labeller import LabellerError
from promptlab.methods.nola import DescriptionsError

USER_ERRORS = (
    BackboneError,
    ClassifierFileError,
    DatasetError,
    DescriptionsError,
    ExportError,
    ImageLoadError,
    LabellerError,
)
