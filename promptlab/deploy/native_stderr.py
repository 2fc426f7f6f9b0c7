"""Keeping C libraries' messages off the terminal during a batch run.

libtiff and libjpeg print warnings ("JPEGLib: Quantization table 0x00 was not defined.",
"TIFFReadDirectory: Warning, ...") straight to file descriptor 2, hundreds of lines for a folder of
damaged files. Here descriptor 2 points at a log file for the duration, while Python's own stderr
(progress bar, summaries, logging) keeps writing to the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from promptlab.data.images import decoder_log


@contextmanager
def native_stderr_to(log_path: str | Path) -> Iterator[Path]:
    """Redirects file descriptor 2 (C code, worker processes' C code too) to ``log_path``, appending.

    Python's ``sys.stderr`` is re-bound to the terminal when it wrote to descriptor 2, and logging
    handlers that wrote to it follow; a ``sys.stderr`` that is not descriptor 2 (a test's capture)
    is left alone.
    """
    log_path = Path(log_path)
    python_stderr = sys.stderr
    try:
        python_fd = python_stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a descriptor (pytest's capsys)
        python_fd = None
    python_stderr.flush()
    terminal_fd = os.dup(2)
    with open(log_path, "ab") as log_file:
        os.dup2(log_file.fileno(), 2)
    handlers = []
    if python_fd == 2:
        sys.stderr = os.fdopen(os.dup(terminal_fd), "w", buffering=1, encoding=python_stderr.encoding)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is python_stderr:
                handler.setStream(sys.stderr)
                handlers.append(handler)
    try:
        yield log_path
    finally:
        try:
            for handler in handlers:  # setStream flushes the stream it replaces: ours must still be open
                handler.setStream(python_stderr)
            if sys.stderr is not python_stderr:
                ours, sys.stderr = sys.stderr, python_stderr
                ours.close()
        finally:
            os.dup2(terminal_fd, 2)  # whatever happened above, the terminal gets descriptor 2 back
            os.close(terminal_fd)


_redirecting = threading.RLock()  # descriptor 2 is the process's: one redirection at a time (the app's threads)


@contextmanager
def decoder_messages_to(path: Path) -> Iterator[None]:
    """Pillow's warnings and libtiff's/libjpeg's prints go to ``path`` instead of the terminal (one
    thread at a time; another thread's C code that prints meanwhile writes there too).
    """
    with _redirecting:
        handler = logging.FileHandler(path, encoding="utf-8")
        decoder_log.addHandler(handler)
        decoder_log.setLevel(logging.INFO)
        try:
            with native_stderr_to(path):
                yield
        finally:
            decoder_log.removeHandler(handler)
            handler.close()


_kept = ExitStack()
_kept_path: Path | None = None


def keep_decoder_messages_in(path: Path) -> Path:
    """:func:`decoder_messages_to` for the rest of a long-running process (the server's inference
    worker), entered once per process; returns the log file in use.
    """
    global _kept_path
    if _kept_path is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _kept.enter_context(decoder_messages_to(path))
        _kept_path = path
    return _kept_path
