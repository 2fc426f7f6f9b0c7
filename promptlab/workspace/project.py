"""A project on disk: classes, uploaded images, an unlabelled pool and class descriptions.

Layout of ``<workspace>/<project>/``::

    project.json                 name, creation time
    data/labelled/<class>/<sha256>.<ext>
    data/unlabelled/<sha256>.<ext>
    data/descriptions.json       {class: [sentence, ...]} for label-free training
    data.dvc, .dvc/              DVC snapshots of data/ (one per training run)
    runs/<run id>/               see :mod:`promptlab.workspace.runs`

Uploads are stored under their content hash and a suffix from their decoded format, never under the
uploaded name, and every write goes through a temporary file and a rename, so a failed upload never
leaves a half-written image behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from promptlab.data.images import IMAGE_EXTENSIONS, ImageLoadError, decode_image_bytes, is_image_file
from promptlab.data.sources import DatasetError, check_class_names
from promptlab.deploy.native_stderr import decoder_messages_to
from promptlab.files import atomic_write_bytes
from promptlab.workspace.snapshots import init_snapshots

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
LOCK_FILE = ".promptlab.lock"
LOCK_TIMEOUT_S = 60
T = TypeVar("T")
PROJECT_FILE = "project.json"
# PIL format name -> the suffix stored images get (only formats the data module reads).
# MPO: the multi-picture JPEG that many phones and cameras write; its first picture is a plain JPEG.
FORMAT_SUFFIXES = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "BMP": ".bmp",
    "GIF": ".gif",
    "WEBP": ".webp",
    "TIFF": ".tif",
}
IMAGE_UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in IMAGE_EXTENSIONS)  # for upload widgets
_UNSAFE_NAME = re.compile(r"[/\\:*?\"<>|\x00-\x1f]")
DECODER_LOG_FILE = "decoders.log"  # the image decoders' own messages about the project's uploads
MAX_NAME_CHARACTERS = 80
MAX_NAME_BYTES = 200  # in UTF-8; file systems allow 255 bytes per folder name
# Control, format (zero-width and bidirectional controls), private-use, surrogate, unassigned, and
# line/paragraph separators: characters that cannot be seen or that reorder what is seen.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
# Zero-width joiner and non-joiner: invisible, yet part of how words are written (the family emoji, Persian);
# allowed between two visible characters, as Unicode identifiers allow them (UAX #31), never alone.
_JOINERS = frozenset({"\u200c", "\u200d"})
_CHARACTER_NAMES = {"\x00": "a NUL character", "\t": "a tab", "\n": "a line break", "\r": "a carriage return"}


class ProjectError(ValueError):
    """A project operation that cannot be done; the message says what to do instead."""


def check_name(name: str, what: str) -> str:
    """A project or class name, stripped and in Unicode NFC (so "café" typed two ways is one name), that
    is safe as a folder name on any file system; raises :class:`ProjectError`.
    """
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise ProjectError(f"The {what} name is empty; type a name.")
    if len(name) > MAX_NAME_CHARACTERS or len(name.encode()) > MAX_NAME_BYTES:
        raise ProjectError(
            f"The {what} name {name!r} is too long: use at most {MAX_NAME_CHARACTERS} characters "
            f"and {MAX_NAME_BYTES} bytes (an emoji takes 4)."
        )
    if name.startswith("."):
        raise ProjectError(f"The {what} name {name!r} starts with a dot, which hides a folder; start it otherwise.")
    unsafe = _UNSAFE_NAME.search(name)
    if unsafe:
        character = unsafe.group()
        shown = _CHARACTER_NAMES.get(character) or (
            f"the control character U+{ord(character):04X}" if ord(character) < 32 else f"{character!r}"
        )
        raise ProjectError(
            f'The {what} name {name!r} contains {shown}, which no folder name may hold (nor / \\ : * ? " < > |); '
            "leave it out."
        )
    hidden = [
        (i, c)
        for i, c in enumerate(name)
        if unicodedata.category(c) in _INVISIBLE_CATEGORIES and not _joins_visible_characters(name, i)
    ]
    if hidden:
        raise ProjectError(
            f"The {what} name {name!r} contains an invisible or text-direction character "
            f"(U+{ord(hidden[0][1]):04X}); type the name again without it."
        )
    return name


def _joins_visible_characters(name: str, at: int) -> bool:
    """True for a zero-width (non-)joiner between two visible characters."""
    if name[at] not in _JOINERS or at == 0 or at == len(name) - 1:
        return False
    return all(
        unicodedata.category(c) not in _INVISIBLE_CATEGORIES and not c.isspace() for c in (name[at - 1], name[at + 1])
    )


@dataclass
class UploadReport:
    """What became of a batch of uploads: stored file names, duplicates and rejections with reasons."""

    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (uploaded name, reason naming the file)


def _changes_project(method: Callable[..., T]) -> Callable[..., T]:
    """Runs a :class:`Project` method that changes stored data under the project's lock."""

    @functools.wraps(method)
    def locked(self: Project, *args, **kwargs) -> T:
        with self.changing():
            return method(self, *args, **kwargs)

    return locked


class Project:
    """One project folder; see the module docstring for its layout."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / PROJECT_FILE).is_file():
            raise ProjectError(f"{str(self.path)!r} is not a promptlab project (no {PROJECT_FILE}); create it first.")
        # Every change to classes, images and descriptions holds this lock (between threads and between
        # processes: two app tabs, or the app and a script), so that checking what is stored and storing
        # are one step: the same image uploaded to two classes at once is stored once, never in both.
        # Reentrant within a thread (rename_class calls set_descriptions).
        self._lock = FileLock(str(self.path / LOCK_FILE), timeout=LOCK_TIMEOUT_S)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Holds the project's lock (see ``__init__``) for a change made outside this class's methods."""
        try:
            with self._lock:
                yield
        except Timeout as error:
            raise ProjectError(
                f"Project {self.name!r} is busy with another change for over {LOCK_TIMEOUT_S} s; try again."
            ) from error

    @property
    def name(self) -> str:
        """The project's name (its folder's)."""
        return self.path.name

    @property
    def data_dir(self) -> Path:
        """The project's images and descriptions."""
        return self.path / "data"

    @property
    def labelled_dir(self) -> Path:
        """One folder per class."""
        return self.data_dir / "labelled"

    @property
    def unlabelled_dir(self) -> Path:
        """The unlabelled pool."""
        return self.data_dir / "unlabelled"

    @property
    def descriptions_file(self) -> Path:
        """Class descriptions for NoLA (JSON: class -> sentences)."""
        return self.data_dir / "descriptions.json"

    @property
    def runs_dir(self) -> Path:
        """One folder per training run."""
        return self.path / "runs"

    # -- classes ------------------------------------------------------------------------------------

    def classes(self) -> list[str]:
        """Class names, sorted (the order labels get)."""
        if not self.labelled_dir.is_dir():
            return []
        return sorted(p.name for p in self.labelled_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _class_dir(self, name: str) -> Path:
        folder = self.labelled_dir / name
        if not name or name.startswith(".") or _UNSAFE_NAME.search(name) or not folder.is_dir():
            raise ProjectError(f"Project {self.name!r} has no class {name!r}.")
        return folder

    @_changes_project
    def add_class(self, name: str) -> str:
        """Adds an empty class; the name is checked like the CLI's class folders (no duplicates)."""
        name = check_name(name, "class")
        try:
            check_class_names([*self.classes(), name], f"Project {self.name!r}")
        except DatasetError as error:
            raise ProjectError(str(error)) from error
        (self.labelled_dir / name).mkdir(parents=True)
        return name

    @_changes_project
    def rename_class(self, old: str, new: str) -> str:
        """Renames a class folder (its images move with it); the descriptions follow the new name."""
        source = self._class_dir(old)
        new = check_name(new, "class")
        if new == old:
            return new
        try:
            check_class_names([*(c for c in self.classes() if c != old), new], f"Project {self.name!r}")
        except DatasetError as error:
            raise ProjectError(str(error)) from error
        source.rename(self.labelled_dir / new)
        descriptions = self.descriptions()
        if old in descriptions:
            descriptions[new] = descriptions.pop(old)
            self.set_descriptions(descriptions)
        return new

    @_changes_project
    def delete_class(self, name: str) -> None:
        """Deletes a class and its images (earlier runs keep them in their DVC snapshot)."""
        shutil.rmtree(self._class_dir(name))
        descriptions = self.descriptions()
        if descriptions.pop(name, None) is not None:
            self.set_descriptions(descriptions)

    # -- images -------------------------------------------------------------------------------------

    def images(self, class_name: str | None) -> list[Path]:
        """Stored images of a class, or of the unlabelled pool with ``None``, sorted by file name."""
        folder = self.unlabelled_dir if class_name is None else self._class_dir(class_name)
        return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []

    def image_counts(self) -> dict[str, int]:
        """Images per class."""
        return {name: len(self.images(name)) for name in self.classes()}

    @_changes_project
    def add_images(self, class_name: str | None, uploads: list[tuple[str, bytes]]) -> UploadReport:
        """Stores uploaded files in a class (or the unlabelled pool with ``None``).

        Each file is decoded in full first (non-images, corrupt files and decompression bombs are
        rejected with the reason), then stored as ``<sha256>.<suffix of its real format>``. A file
        already in the same place is a duplicate; one already in another class is rejected, since an
        image cannot have two labels.

        Args:
            class_name: the class the images belong to, or None for the unlabelled pool.
            uploads: (uploaded file name, content) pairs; the name is used only in messages.
        """
        folder = self.unlabelled_dir if class_name is None else self._class_dir(class_name)
        existing = self._stored_hashes()
        report = UploadReport()
        # libtiff's and libjpeg's own prints for damaged files (hundreds of lines) go to a file, not the terminal.
        with decoder_messages_to(self.path / DECODER_LOG_FILE):
            self._store_uploads(folder, uploads, existing, report)
        return report

    def _store_uploads(
        self, folder: Path, uploads: list[tuple[str, bytes]], existing: dict[str, Path], report: UploadReport
    ) -> None:
        for uploaded_name, data in uploads:
            if len(data) > MAX_UPLOAD_BYTES:
                limit = MAX_UPLOAD_BYTES // 2**20
                report.rejected.append(
                    (uploaded_name, f"{uploaded_name!r} is larger than {limit} MB; resize it first.")
                )
                continue
            try:
                _, image_format = decode_image_bytes(data, uploaded_name)
            except ImageLoadError as error:
                report.rejected.append((uploaded_name, str(error)))
                continue
            suffix = FORMAT_SUFFIXES.get(image_format)
            if suffix is None:
                supported = ", ".join(sorted(FORMAT_SUFFIXES))
                reason = f"{uploaded_name!r} is a {image_format} image; use {supported}."
                report.rejected.append((uploaded_name, reason))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in existing:
                if existing[digest] == folder:
                    report.duplicates.append(uploaded_name)
                else:
                    where = existing[digest].name
                    report.rejected.append((uploaded_name, f"{uploaded_name!r} is already stored in {where!r}."))
                continue
            atomic_write_bytes(folder / f"{digest}{suffix}", data)
            existing[digest] = folder
            report.added.append(f"{digest}{suffix}")

    def _stored_hashes(self) -> dict[str, Path]:
        """sha256 of every stored image -> its folder (file names are the hashes)."""
        folders = [self.labelled_dir / c for c in self.classes()] + [self.unlabelled_dir]
        return {p.stem: folder for folder in folders if folder.is_dir() for p in folder.iterdir() if is_image_file(p)}

    @_changes_project
    def label_image(self, path: str | Path, class_name: str) -> Path:
        """Moves an image of the unlabelled pool into a class (same content-hash name); returns its new path.

        Raises:
            ProjectError: no such class, or the image is not (any more) in the pool.
        """
        folder = self._class_dir(class_name)
        path = Path(path)
        source = self.unlabelled_dir / path.name
        if not is_image_file(source):
            raise ProjectError(f"{path.name!r} is not in the unlabelled pool of project {self.name!r} (any more).")
        target = folder / source.name
        source.replace(target)  # one rename: the image is in the pool or in the class, never both
        return target

    @_changes_project
    def remove_image(self, path: str | Path) -> None:
        """Deletes one stored image (earlier runs keep it in their DVC snapshot)."""
        path = Path(path).resolve()
        if not path.is_relative_to(self.data_dir.resolve()) or path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ProjectError(f"{str(path)!r} is not an image of project {self.name!r}.")
        path.unlink(missing_ok=True)

    # -- descriptions -------------------------------------------------------------------------------

    def descriptions(self) -> dict[str, list[str]]:
        """Class descriptions for label-free training ({} when none were written)."""
        if not self.descriptions_file.is_file():
            return {}
        try:
            content = json.loads(self.descriptions_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return {str(k): [str(s) for s in v] for k, v in content.items() if isinstance(v, list)}

    @_changes_project
    def set_descriptions(self, descriptions: dict[str, list[str]]) -> None:
        """Saves descriptions of existing classes; blank sentences are dropped."""
        unknown = sorted(set(descriptions) - set(self.classes()))
        if unknown:
            raise ProjectError(f"Descriptions name unknown class(es) {', '.join(unknown)}; add the class first.")
        clean = {k: [s.strip() for s in v if s.strip()] for k, v in descriptions.items()}
        atomic_write_bytes(self.descriptions_file, json.dumps({k: v for k, v in clean.items() if v}, indent=2).encode())


class Workspace:
    """A folder of projects (the app's ``PROMPTLAB_WORKSPACE``, default ``~/promptlab-workspace``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def projects(self) -> list[str]:
        """The names of every project in the workspace."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / PROJECT_FILE).is_file())

    def open(self, name: str) -> Project:
        """The project ``name`` (ignoring case, as class names do); raises ProjectError when there is none."""
        if not (self.root / name).is_dir():
            name = self.same_name(name) or name
        return Project(self.root / name)

    def same_name(self, name: str) -> str | None:
        """The existing project whose name reads as ``name`` when case is ignored (``Cats``, ``cats``)."""
        key = unicodedata.normalize("NFC", name.strip()).casefold()
        return next((p for p in self.projects() if unicodedata.normalize("NFC", p).casefold() == key), None)

    def create(self, name: str) -> Project:
        """Creates an empty project folder (with a DVC repository for its data snapshots)."""
        name = check_name(name, "project")
        path = self.root / name
        existing = self.same_name(name) or (name if path.exists() else None)
        if existing:
            same = "" if existing == name else f" as {existing!r} (names ignore case, as class names do)"
            raise ProjectError(f"A project named {name!r} already exists{same}; pick another name or open it.")
        try:
            (path / "data" / "labelled").mkdir(parents=True)
            init_snapshots(path)
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            atomic_write_bytes(path / PROJECT_FILE, json.dumps({"name": name, "created": created}).encode())
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # nothing of the user's is in it yet
            raise
        return Project(path)
