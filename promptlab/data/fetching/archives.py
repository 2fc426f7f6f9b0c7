"""Extracting a downloaded archive (zip or tar) without trusting it.

An entry is refused, and nothing of the archive is kept, when its path is absolute or climbs out of
the target folder, when it is a link or a device, or when its size is absurd: more than
:data:`MAX_RATIO` times the archive, or one member compressed more than :data:`MAX_MEMBER_RATIO`
times (a zip bomb). Pickled files (the few-shot caches some mirrors ship) are skipped: nothing reads
them, and nothing should unpickle a downloaded file.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from promptlab.data.dataset_error import DatasetError

MAX_RATIO = 20  # extracted bytes per archive byte (images barely compress: real archives are near 1)
MAX_MEMBER_RATIO = 1000  # one member's extracted bytes per compressed byte
SKIPPED_SUFFIXES = (".pkl", ".pickle")


class UnsafeArchiveError(DatasetError):
    """An archive has an entry that could write outside its folder, a link, or an absurd size."""


def _checked_name(archive: Path, name: str) -> PurePosixPath | None:
    """The entry's relative path, None for entries to skip; raises for a path that leaves the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(
            f"Archive {str(archive)!r} has an entry {name!r} that points outside its folder; "
            "the download is not the published file, delete it and fetch again."
        )
    if not path.parts or path.suffix.lower() in SKIPPED_SUFFIXES or "__MACOSX" in path.parts:
        return None
    return path


def _refuse(archive: Path, name: str, what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"Archive {str(archive)!r} has {what} ({name!r}), which promptlab does not extract; "
        "the download is not the published file, delete it and fetch again."
    )


def _check_total(archive: Path, total: int) -> None:
    if total > MAX_RATIO * max(archive.stat().st_size, 1) + 2**20:
        raise UnsafeArchiveError(
            f"Archive {str(archive)!r} would extract to {total:,} bytes, more than {MAX_RATIO} times its size; "
            "it is not the published file, delete it and fetch again."
        )


def _zip_members(archive: Path, zipped: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    members, total = [], 0
    for info in zipped.infolist():
        path = _checked_name(archive, info.filename)
        if path is None or info.is_dir():
            continue
        mode = info.external_attr >> 16
        if mode and (mode & 0o170000) not in (0, 0o100000):  # a symlink or other special file
            raise _refuse(archive, info.filename, "a link or special file")
        if info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1) + 2**20:
            raise _refuse(archive, info.filename, "a member compressed beyond any image's ratio")
        total += info.file_size
        members.append((info, path))
    _check_total(archive, total)
    return members


def _extract_zip(archive: Path, target: Path, progress: Callable[[int, int], None]) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = _zip_members(archive, zipped)
        for done, (info, path) in enumerate(members, 1):
            destination = target.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, 2**20)
            progress(done, len(members))


def _tar_members(archive: Path, tarred: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members, total = [], 0
    for member in tarred.getmembers():
        path = _checked_name(archive, member.name)
        if member.issym() or member.islnk():
            raise _refuse(archive, member.name, "a link")
        if not (member.isfile() or member.isdir()):
            raise _refuse(archive, member.name, "a device or other special file")
        if path is None or member.isdir():
            continue
        total += member.size
        members.append(member)
    _check_total(archive, total)
    return members


def _extract_tar(archive: Path, target: Path, progress: Callable[[int, int], None]) -> None:
    with tarfile.open(archive) as tarred:
        members = _tar_members(archive, tarred)
        for done, member in enumerate(members, 1):
            # The "data" filter repeats the checks above (and drops permissions and owners).
            tarred.extract(member, target, filter="data")
            progress(done, len(members))


def extract_archive(
    archive: Path, target: Path, progress: Callable[[int, int], None] = lambda done, total: None
) -> None:
    """Extracts ``archive`` (a zip or a tar, compressed or not) into the folder ``target``.

    Every entry is checked before the first is written, so an unsafe archive writes nothing.

    Args:
        archive: the downloaded, verified file.
        target: an empty folder to extract into.
        progress: called with (entries done, entries in all) after each entry.

    Raises:
        UnsafeArchiveError: an entry leaves the folder, is a link or device, or the sizes are absurd.
        DatasetError: the file is neither a zip nor a tar.
    """
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, target, progress)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, target, progress)
    else:
        raise DatasetError(f"{str(archive)!r} is neither a zip nor a tar archive; delete it and fetch again.")
