"""Fetching a standard dataset into ``<root>/<folder>/``, laid out as ``--data.dataset NAME`` reads it.

A fetch downloads each file into ``<root>/.downloads/<name>/`` (an interrupted download resumes
there on the next call), verifies its size and checksum, extracts it into ``<root>/.partial/<name>/``
with :func:`~promptlab.data.fetching.archives.extract_archive`, finds the complete layout in it and
renames it into place in one step, last of all writing ``.promptlab-fetch.json`` (what was fetched,
from where, with which checksums). Until that rename nothing is under the dataset's folder, so a
failed or interrupted fetch leaves none of it half-extracted, and the next call starts where the
downloads stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from promptlab.data.catalog import STANDARD_DATASETS
from promptlab.data.dataset_error import DatasetError
from promptlab.data.fetching.archives import extract_archive
from promptlab.data.fetching.imagenet_classes import (
    CLASSNAMES_FILE,
    IMAGENET_HELP,
    check_imagenet_folder,
    write_classnames,
)
from promptlab.data.fetching.remote import DATASET_SOURCES, DatasetSource, RemoteFile

MANIFEST = ".promptlab-fetch.json"
DOWNLOADS = ".downloads"
PARTIAL = ".partial"
Say = Callable[[str], None]


class FetchError(DatasetError):
    """A download failed, a host is gone, or a file does not match its pinned checksum."""


@dataclass(frozen=True)
class VerifiedFile:
    """A downloaded file that matched its checksum."""

    path: Path
    size: int
    checksum: str
    revision: str | None


def dataset_folder(name: str, root: Path) -> Path:
    """Where ``--data.dataset NAME --data.root ROOT`` reads the dataset."""
    return root / STANDARD_DATASETS[name].folder


def fetched_manifest(name: str, root: Path) -> dict | None:
    """The manifest of a dataset fetched and verified into ``root``, or None."""
    folder = dataset_folder(name, root)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if (folder / DATASET_SOURCES[name].marker).exists() else None


def _manual_route(source: DatasetSource, root: Path) -> str:
    return (
        f"download it by hand from {source.homepage} and lay it out under "
        f"{str(dataset_folder(source.name, root))!r} as CoOp's DATASETS.md describes"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


def _digest(path: Path, algorithm: str, say: Say) -> str:
    digest = hashlib.new(algorithm)
    size, done, last = path.stat().st_size, 0, time.monotonic()
    with path.open("rb") as stream:
        while block := stream.read(2**22):
            digest.update(block)
            done += len(block)
            if time.monotonic() - last > 10:
                say(f"  verifying {path.name}: {done / max(size, 1):.0%}")
                last = time.monotonic()
    return digest.hexdigest()


def _verify(path: Path, file: RemoteFile, size: int | None, sha256: str | None, say: Say) -> str:
    """Checks ``path`` against the pinned size and checksum; deletes it and raises when it differs."""
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", file.md5)
    if expected is None:
        raise FetchError(f"{file.url} has no pinned checksum, so promptlab does not use it; report this.")
    actual_size = path.stat().st_size
    actual = _digest(path, algorithm, say) if size in (None, actual_size) else None
    if actual != expected.lower():
        path.unlink()
        found = f"{actual_size:,} bytes" if actual is None else f"{algorithm} {actual}"
        raise FetchError(
            f"{path.name} from {file.url} does not match its pinned checksum ({found}, expected "
            f"{algorithm} {expected}); it was deleted: fetch again, and if it fails again the host serves "
            "another file than the one pinned."
        )
    return f"{algorithm}:{expected.lower()}"


def _check_free_space(folder: Path, needed: int, file: RemoteFile) -> None:
    """Refuses to start a download that the disk cannot hold with its extraction (about as large again)."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(
            f"{file.filename} needs about {needed / 1e9:.1f} GB free under {str(folder)!r} (download and "
            f"extraction) and {free / 1e9:.1f} GB are; free space or pass another --root."
        )


def _published_checksum(file: RemoteFile) -> tuple[int | None, str | None, str | None]:
    """(size, SHA-256, commit) the hub publishes for ``file`` at its revision, read before downloading;
    the pinned values where the catalog has them.
    """
    if file.host != "hub":
        return file.size, file.sha256, None
    from huggingface_hub import get_hf_file_metadata

    metadata = get_hf_file_metadata(file.url_at(os.environ.get("HF_ENDPOINT")))
    published = (metadata.etag or "").removeprefix("W/").strip('"').lower()
    sha256 = file.sha256 or (published if len(published) == 64 else None)
    if sha256 is None:
        raise FetchError(f"The hub publishes no SHA-256 for {file.url}, so promptlab cannot verify it; report this.")
    if file.size is not None and metadata.size not in (None, file.size):
        raise FetchError(
            f"{file.url} is {metadata.size:,} bytes, not the pinned {file.size:,}: the host serves another file "
            "than the one pinned; report this."
        )
    return file.size or metadata.size, sha256, metadata.commit_hash


def _download_resumable(file: RemoteFile, downloads: Path, say: Say) -> VerifiedFile:
    """Downloads with huggingface_hub's HTTP client (progress bar, retries, HTTP ranges) into a partial
    file kept across calls, so that an interrupted fetch resumes where it stopped.
    """
    from huggingface_hub.file_download import http_get

    size, sha256, revision = _published_checksum(file)
    path = downloads / Path(file.filename).name
    if not path.is_file():
        partial = path.with_name(path.name + ".incomplete")
        with partial.open("ab") as stream:
            done = stream.tell()
            _check_free_space(downloads, 2 * (size or 0) - done, file)
            say(
                f"  downloading {file.url} ({'resuming at byte ' + format(done, ',') + ', ' if done else ''}"
                f"{'sha256:' + sha256 if sha256 else file.checksum})"
            )
            http_get(file.url_at(os.environ.get("HF_ENDPOINT")), stream, resume_size=done, expected_size=size)
        partial.rename(path)
    checksum = _verify(path, file, size, sha256, say)
    return VerifiedFile(path, path.stat().st_size, checksum, revision)


def download(file: RemoteFile, source: DatasetSource, root: Path, say: Say) -> VerifiedFile:
    """Downloads one file into ``<root>/.downloads/<name>/`` and verifies it.

    Raises:
        FetchError: the host cannot be reached or lacks the file (naming the URL and the manual route),
            or the file does not match its checksum.
    """
    downloads = root / DOWNLOADS / source.name
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        return _download_resumable(file, downloads, say)
    except DatasetError:
        raise
    except Exception as error:  # each host's client raises its own types for "offline" and "gone"
        raise FetchError(
            f"Could not download {file.url_at(os.environ.get('HF_ENDPOINT'))} ({_first_line(error)}); "
            f"check the network, or {_manual_route(source, root)}."
        ) from error


def _find_marker(tree: Path, marker: str) -> Path | None:
    """The shallowest folder in ``tree`` that holds ``marker``."""
    level = [tree]
    for _ in range(4):
        for folder in level:
            if (folder / marker).exists():
                return folder
        level = [child for folder in level for child in sorted(folder.iterdir()) if child.is_dir()]
    return None


def _every_ten_seconds(say: Say, prefix: str) -> Callable[[int, int], None]:
    """A progress callback that says ``prefix: done of total files`` at most every ten seconds."""
    last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last > 10:
            say(f"{prefix}: {done:,} of {total:,} files")
            last = time.monotonic()

    return progress


def _apply_renames(tree: Path, renames: dict[str, str]) -> None:
    for old, new in renames.items():
        for found in sorted(tree.rglob(old), key=lambda p: len(p.parts)):
            if found.is_dir() and not found.with_name(new).exists():
                found.rename(found.with_name(new))
                break


def _place(source: DatasetSource, staging: Path, files: list[VerifiedFile], root: Path, say: Say) -> Path:
    """Extracts the verified files into ``staging`` and renames the complete layout into place."""
    for file in files:
        say(f"  extracting {file.path.name}")
        extract_archive(file.path, staging, _every_ten_seconds(say, f"  extracting {file.path.name}"))
    _apply_renames(staging, source.renames)
    found = _find_marker(staging, source.marker)
    info = STANDARD_DATASETS[source.name]
    if found is None or (info.image_dir and not (found / info.image_dir).exists()):
        raise FetchError(
            f"The archive of {source.name!r} has no {source.marker!r} with {info.image_dir or 'its images'!r} "
            f"beside it, so it is not laid out as promptlab reads it; {_manual_route(source, root)}."
        )
    if source.imagenet_classes:
        write_classnames(found)
    files_fetched = [
        {
            "url": file.url,
            "size": verified.size,
            "checksum": verified.checksum,
            "checksum_origin": file.origin,
            **({"revision": verified.revision} if verified.revision else {}),
        }
        for file, verified in zip(source.files, files, strict=True)
    ]
    _write_manifest(found, source.name, files_fetched)
    destination = dataset_folder(source.name, root)
    destination.parent.mkdir(parents=True, exist_ok=True)
    found.rename(destination)
    return destination


def _write_manifest(folder: Path, name: str, files: list[dict]) -> None:
    """Writes ``folder/.promptlab-fetch.json``: what was fetched, when, from where, with which checksums."""
    manifest = {"dataset": name, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _link_imagenet(root: Path, imagenet_dir: Path | None, say: Say) -> Path:
    """ImageNet: checks the user's download, links it as ``images/`` and writes ``classnames.txt``."""
    folder = dataset_folder("imagenet", root)
    images = folder / "images"
    if not images.exists():
        if imagenet_dir is None:
            raise FetchError(IMAGENET_HELP)
        check_imagenet_folder(imagenet_dir)
        folder.mkdir(parents=True, exist_ok=True)
        images.symlink_to(imagenet_dir.resolve(), target_is_directory=True)
        say(f"  linked {images} -> {imagenet_dir.resolve()}")
    check_imagenet_folder(images)
    if (folder / CLASSNAMES_FILE).is_file():
        say(f"  kept the {CLASSNAMES_FILE} already in {folder}")
    else:
        write_classnames(folder)
    _write_manifest(folder, "imagenet", [])
    return folder


def track_with_dvc(folder: Path) -> str:
    """``dvc add`` of a fetched dataset folder (in the DVC repository holding it, or a new one in its
    parent); returns the data version runs record (``dvc:<md5>``).
    """
    from promptlab.data.versioning import dvc_data_version

    repository = next((p for p in (folder.parent, *folder.parent.parents) if (p / ".dvc").is_dir()), None)
    commands = [] if repository else [["init", "--no-scm"]]
    repository = repository or folder.parent
    for arguments in [*commands, ["add", str(folder.relative_to(repository))]]:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *arguments, "-q"], cwd=repository, capture_output=True, text=True
        )
        if done.returncode:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise FetchError(
                f"dvc {arguments[0]} failed in {str(repository)!r}: {message[-1] if message else 'no message'}."
            )
    version = dvc_data_version(folder)
    if version is None:
        raise FetchError(f"dvc add of {str(folder)!r} wrote no .dvc file; run `dvc add` there by hand.")
    return version


def fetch_dataset(
    name: str,
    root: Path,
    say: Say = print,
    imagenet_dir: Path | None = None,
    keep_archives: bool = False,
) -> tuple[Path, bool]:
    """Fetches one dataset into ``root`` (see the module docstring).

    Args:
        name: the dataset (a key of :data:`DATASET_SOURCES`).
        root: the data root (``--data.root``).
        say: where progress lines go.
        imagenet_dir: for ``imagenet``, the folder holding the user's ``train/`` and ``val/``.
        keep_archives: keep the downloaded archives in ``<root>/.downloads/`` after extracting them.

    Returns:
        The dataset's folder, and whether anything was fetched (False: it was there and verified).

    Raises:
        FetchError: a download failed, a file does not match its checksum, or the archive's layout is wrong.
        DatasetError: the dataset's folder exists but was not fetched by promptlab, or an archive is unsafe.
    """
    if name not in DATASET_SOURCES:
        raise DatasetError(f"Unknown dataset {name!r}; `promptlab data list` names the {len(DATASET_SOURCES)} known.")
    (root / DOWNLOADS).mkdir(parents=True, exist_ok=True)
    with FileLock(root / DOWNLOADS / f"{name}.lock"):  # two fetches of one dataset take turns
        return _fetch_locked(DATASET_SOURCES[name], root, say, imagenet_dir, keep_archives)


def _fetch_locked(
    source: DatasetSource, root: Path, say: Say, imagenet_dir: Path | None, keep_archives: bool
) -> tuple[Path, bool]:
    name = source.name
    if fetched_manifest(name, root) is not None:
        return dataset_folder(name, root), False
    if not source.files:
        return _link_imagenet(root, imagenet_dir, say), True
    destination = dataset_folder(name, root)
    if destination.exists():
        raise DatasetError(
            f"{str(destination)!r} exists but was not fetched by promptlab (it has no {MANIFEST}); "
            f"use it as it is with --data.root {root}, or move it away and fetch again."
        )
    files = [download(file, source, root, say) for file in source.files]
    staging = root / PARTIAL / name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        folder = _place(source, staging, files, root, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archives:
        shutil.rmtree(root / DOWNLOADS / name, ignore_errors=True)
    return folder, True
