"""What every method declares about itself, so that the app, the worker and the benchmarks need no
method-specific code: its key and label, what it learns from, the app settings it takes and how they
become its init args, and what the Inspect page shows of it (typed panels, rendered generically).

A method class fills the class attributes of :class:`MethodInfo` (inherited by
:class:`~promptlab.methods._base.CLIPClassifier`) and may override
:meth:`MethodInfo.init_args_from_settings` and ``inspection_panels``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

LearnsFrom = Literal["names", "labels", "unlabelled"]


@dataclass(frozen=True)
class Setting:
    """A number the app's Train page asks for under *Advanced*, passed to the method as an init arg.

    Attributes:
        name: the init arg (``lr``, ``n_ctx``...).
        label: what the page shows.
        default: the preset value; minimum / maximum: the range the page accepts.
        integer: an int setting (else a float).
    """

    name: str
    label: str
    default: float
    minimum: float
    maximum: float
    integer: bool = False

    def check(self, value: float) -> float | int:
        """The value as the method takes it; raises ValueError outside the range."""
        value = int(value) if self.integer else float(value)
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{self.label} must be between {self.minimum} and {self.maximum} (got {value}).")
        return value


# -- what the Inspect page shows: a list of panels, saved as JSON by the worker ----------------------


@dataclass
class Bars:
    """A horizontal bar chart of ``values`` (label -> number)."""

    title: str
    values: Mapping[str, float]
    axis: str = ""
    caption: str = ""
    kind: str = "bars"


@dataclass
class Table:
    """A table: one dict per row, the same keys in every row."""

    title: str
    rows: list[dict[str, Any]]
    caption: str = ""
    kind: str = "table"


@dataclass
class Text:
    """A paragraph of Markdown (and a warning to show with it, if any)."""

    title: str
    text: str
    caption: str = ""
    kind: str = "text"
    warning: str = ""


Panel = Bars | Table | Text
PANEL_KINDS: dict[str, type] = {"bars": Bars, "table": Table, "text": Text}


def panels_to_json(panels: list[Panel]) -> list[dict]:
    return [asdict(panel) for panel in panels]


def panels_from_json(content: list[dict]) -> list[Panel]:
    """Panels saved by :func:`panels_to_json`; entries of unknown kind (a newer promptlab) are dropped."""
    panels = []
    for entry in content if isinstance(content, list) else []:
        cls = PANEL_KINDS.get(str(entry.get("kind"))) if isinstance(entry, dict) else None
        if cls is not None:
            panels.append(cls(**entry))
    return panels


@dataclass(frozen=True)
class ToyDefaults:
    """Where a method's toy-clip settings come from: a config under ``promptlab/configs/toy/``."""

    config: str
    drop: tuple[str, ...] = field(default=())  # init args of that config the app must not take (file paths)


class MethodInfo:
    """Class attributes and hooks every method declares (see the module docstring).

    Attributes:
        key: the method's short name in the app, run folders and settings (``coop``).
        label: the name people read (``CoOp``).
        about: one paragraph for the app's Train page.
        learns_from: ``labels`` (labelled images), ``unlabelled`` (an unlabelled pool and class
            names) or ``names`` (class names only: nothing is trained).
        settings: what the app's *Advanced* section asks for, besides epochs and batch size.
        toy: the toy config the app starts from with toy-clip (None: the method's defaults).
        app_init_args: init args the app gives the method on backbones other than toy-clip (which
            takes the toy config's).
        descriptions_arg: the init arg that takes a JSON file of class descriptions, if the method
            uses the descriptions people write on the Data page.
        trainer_args: Trainer settings the method needs in the app (``gradient_clip_val``...).
        min_images_per_class: labelled images each class needs (1 to measure, 2 to learn and measure).
        uses_epochs: False when the method is fitted in one go (one epoch runs, whatever is asked).
        transfers_to_new_classes: what it learned applies to classes it never saw (base-to-new).
        image_encoder_per_step: training runs the image encoder forwards and backwards at every step
            (its features cannot be cached).
        text_encoder_per_image: the text encoder runs for every image, in training and when classifying.
        epochs_by_shots: epochs of the benchmark protocol by shot count (CoOp's table), or None for
            the toy config's.
    """

    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    about: ClassVar[str] = ""
    learns_from: ClassVar[LearnsFrom] = "labels"
    settings: ClassVar[tuple[Setting, ...]] = ()
    toy: ClassVar[ToyDefaults | None] = None
    app_init_args: ClassVar[dict[str, Any]] = {}
    descriptions_arg: ClassVar[str | None] = None
    trainer_args: ClassVar[dict[str, Any]] = {}
    min_images_per_class: ClassVar[int] = 2
    uses_epochs: ClassVar[bool] = True
    epochs_by_shots: ClassVar[dict[int, int] | None] = None
    transfers_to_new_classes: ClassVar[bool] = True
    image_encoder_per_step: ClassVar[bool] = False
    text_encoder_per_image: ClassVar[bool] = False

    @classmethod
    def trains(cls) -> bool:
        """True when the method has something to fit (``promptlab fit``), False for ``promptlab test`` only."""
        return cls.learns_from != "names"

    @classmethod
    def init_args_from_settings(cls, values: dict[str, float]) -> dict[str, Any]:
        """The app's setting values -> init args; unknown names are ignored, defaults fill the gaps."""
        return {s.name: s.check(values.get(s.name, s.default)) for s in cls.settings}
