"""Opening files a user names, safely: regular files only, bounded reads, never a hang (torch-free).

Every reader of vaeaug (model files, ONNX exports, generated sets, ``.npz`` and image folders)
opens what it reads through :func:`open_regular` or :func:`read_bounded`:

* the file is opened non-blocking, so a FIFO or a device never blocks the ``open`` call, and is
  then checked with ``fstat`` on the descriptor itself (no race between a check and the open):
  anything but a regular file (a FIFO, ``/dev/zero`` or a symlink to it, a socket, a directory)
  is refused with a :class:`ValueError` that names what it is;
* its size is known before a byte is read, and a caller states the most it will read, so a file
  can never make vaeaug read without bound;
* operating-system errors become messages that say what to do (``permission denied``: check the
  file's permissions), not a misleading parse error further down.

A missing file stays a :class:`FileNotFoundError` (what Python and torchvision raise), with the
path and the kind of file that was expected.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["open_regular", "read_bounded", "size_of", "file_kind", "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30


def file_kind(mode: int) -> str:
    """A human name for what a ``st_mode`` describes.

    Example:
        >>> import stat
        >>> file_kind(stat.S_IFIFO), file_kind(stat.S_IFREG)
        ('a FIFO (named pipe)', 'a regular file')
    """
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], what: str, *, max_bytes: int | None = None) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (of at most ``max_bytes``).

    Args:
        path: the file (a symlink is followed; its target must be a regular file).
        what: what the file should be, for messages (``"model file"``, ``"ONNX file"``...).
        max_bytes: refuse a larger file (``None``: no limit on the size; reads are the caller's).

    Returns:
        The open file, positioned at 0; its size is ``os.fstat(f.fileno()).st_size``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file, too large, or not readable (the message says why).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> open_regular(d, "model file")
        Traceback (most recent call last):
        ...
        ValueError: ... is a directory, not a model file; vaeaug reads only regular files
    """
    where = repr(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such {what}: {where}") from None
    except PermissionError:
        raise ValueError(f"cannot read the {what} {where}: permission denied; check the file's permissions "
                         "(it must be readable by this user)") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a directory, not a {what}") from None
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket, or a FIFO/device that cannot be opened
            raise ValueError(f"{where} is not a regular file, so it cannot be a {what}") from None
        raise ValueError(f"cannot open the {what} {where}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            raise ValueError(f"{where} is {kind}, not a {what}; vaeaug reads only regular files")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ValueError(f"{where} is {st.st_size} bytes, more than the {max_bytes} bytes a {what} can have; "
                             f"it is not a {what} vaeaug wrote")
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], what: str, *, max_bytes: int) -> bytes:
    """All the bytes of a regular file of at most ``max_bytes``, read once (see :func:`open_regular`).

    A file that grows while it is read is refused rather than read past its announced size.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> read_bounded(p, "test file", max_bytes=10)
        b'abc'
    """
    with open_regular(path, what, max_bytes=max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        blob = f.read(size + 1)
    if len(blob) != size:
        raise ValueError(f"{str(path)!r} changed while it was read ({size} bytes announced, {len(blob)} read); "
                         "read it again when nothing is writing to it")
    return blob


def size_of(path: str | os.PathLike[str], what: str) -> int:
    """The size of a regular file, refusing anything else (without opening it)."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such {what}: {str(path)!r}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{str(path)!r} is {file_kind(st.st_mode)}, not a {what}; vaeaug reads only regular files")
    return st.st_size
