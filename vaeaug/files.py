"""Files, safely, once for every module (torch-free): opening regular files only, bounded reads that never
hang, strict bounded JSON, SHA-256 of files and bytes, and atomic writes.

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
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

__all__ = ["open_regular", "read_bounded", "size_of", "file_kind", "read_json", "parse_json", "canonical_json",
           "sha256_file", "sha256_open", "sha256_bytes", "FileId", "file_id", "check_same_file", "write_atomic",
           "check_name", "json_items", "MAX_JSON_DEPTH", "MAX_JSON_ITEMS", "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30


def _a(what: str) -> str:
    """``what`` with its article: ``a model file``, ``an image file``, ``an ONNX file``."""
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


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
        raise ValueError(f"{where} is a directory, not {_a(what)}") from None
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket, or a FIFO/device that cannot be opened
            raise ValueError(f"{where} is not a regular file, so it cannot be {_a(what)}") from None
        raise ValueError(f"cannot open the {what} {where}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            raise ValueError(f"{where} is {kind}, not {_a(what)}; vaeaug reads only regular files")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ValueError(f"{where} is {st.st_size} bytes, more than the {max_bytes} bytes {_a(what)} can have; "
                             f"it is not {_a(what)} vaeaug wrote")
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
        raise ValueError(f"{str(path)!r} is {file_kind(st.st_mode)}, not {_a(what)}; vaeaug reads only regular files")
    return st.st_size


def sha256_bytes(blob: bytes | memoryview) -> str:
    """The SHA-256 of ``blob``, as hex.

    Example:
        >>> sha256_bytes(b"")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: str | os.PathLike[str], what: str = "file") -> str:
    """The SHA-256 of a regular file (see :func:`open_regular`), read in blocks of 1 MiB, as hex.

    A file that shrinks while it is read is refused.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> _ = p.write_bytes(b"")
        >>> sha256_file(p) == sha256_bytes(b"")
        True
    """
    with open_regular(path, what) as f:
        return sha256_open(f, str(path))


def sha256_open(f: BinaryIO, name: str) -> str:
    """The SHA-256 of an open regular file from its first byte to its size, read in blocks of 1 MiB, as hex:
    the bytes of the very file that is then used (mapped, parsed), not of whatever a path names later.

    Args:
        f: a file opened for binary reading (its position is left at the end).
        name: the file's name, for the error of a file that shrinks while it is read.

    Returns:
        The digest in hex.

    Example:
        >>> import io
        >>> f = io.BufferedReader(io.FileIO(__file__))
        >>> sha256_open(f, __file__) == sha256_file(__file__)
        True
    """
    h = hashlib.sha256()
    f.seek(0)
    left = os.fstat(f.fileno()).st_size
    while left > 0 and (block := f.read(min(MiB, left))):
        h.update(block)
        left -= len(block)
    if left:
        raise ValueError(f"{name!r} changed while it was read ({left} bytes short); read it again when nothing is "
                         "writing to it")
    return h.hexdigest()


FileId = tuple[int, int, int, int]
"""``(st_dev, st_ino, st_size, st_mtime_ns)`` of an open file: the same file, unchanged, has the same id."""


def file_id(f: BinaryIO) -> FileId:
    """The :data:`FileId` of an open file, to tell later (say, in a DataLoader worker that reopens it) whether the
    file there is still the one that was checked.

    Example:
        >>> with open(__file__, "rb") as a, open(__file__, "rb") as b:
        ...     file_id(a) == file_id(b)
        True
    """
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_same_file(f: BinaryIO, want: FileId, name: str) -> FileId:
    """Refuse an open file that is not the one checked earlier, unchanged (its :data:`FileId` differs).

    Args:
        f: the file as opened now (say, by a DataLoader worker).
        want: its id when it was checked.
        name: how to name it in the error.

    Returns:
        The file's id.

    Raises:
        ValueError: another file, or its size or modification time changed.

    Example:
        >>> with open(__file__, "rb") as a:
        ...     check_same_file(a, file_id(a), __file__) == file_id(a)
        True
    """
    fid = file_id(f)
    if fid != want:
        raise ValueError(f"{name} changed after the set was opened (another file, or its size or modification time "
                         "differs); never edit a set in use - regenerate it into a new folder and open that")
    return fid


# ---------------------------------------------------------------------------------------------------
# JSON: strict (no NaN or infinities), bounded in bytes, values and nesting


MAX_JSON_DEPTH = 32
"""Nesting of any JSON vaeaug reads (it writes at most 6 levels); deeper is refused before it is used."""

MAX_JSON_ITEMS = 1 << 21
"""Values in any JSON vaeaug reads, counted before parsing: a document's commas and opening brackets bound
the objects ``json`` would build, so no document can make it build millions of them (a 63 MB
``[{},{},...]`` took GBs). vaeaug writes far fewer: a 64 MiB manifest of 65536 shards holds about 1.1M,
a model file's header a few thousand plus one per class name and a few per epoch of history."""


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _too_deep(doc: Any) -> bool:
    """Whether a parsed JSON document nests deeper than :data:`MAX_JSON_DEPTH` (iterative: no recursion)."""
    stack = [(doc, 0)] if isinstance(doc, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            return True
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))  # containers only
    return False


def json_items(text: bytes | str) -> int:
    """An upper bound on the values in JSON ``text``: its commas and opening brackets, plus one (strings included).

    Example:
        >>> json_items(b'{"a": [1, 2], "b": "x,y"}')
        6
    """
    if isinstance(text, str):
        return text.count(",") + text.count("[") + text.count("{") + 1
    return text.count(b",") + text.count(b"[") + text.count(b"{") + 1


def parse_json(blob: bytes | str, where: str | os.PathLike[str], what: str, *, fix: str = "",
               allow_nan: bool = False) -> Any:
    """Parse strict JSON: no ``NaN``/``Infinity``, no number out of float range, at most :data:`MAX_JSON_DEPTH`
    levels and :data:`MAX_JSON_ITEMS` values (counted before parsing, so memory stays bounded); any failure
    is a ``ValueError`` that names ``where`` and says ``what`` was expected.

    Args:
        blob: the JSON text (bytes are decoded as UTF-8).
        where: the file (or the file and field) it came from, for messages.
        what: what it should be (``"manifest"``, ``"model header"``...).
        fix: what to do about it, appended to messages.
        allow_nan: read ``NaN`` and ``Infinity`` (what ``json.dumps`` writes for them) as floats, for a
            document whose fields are validated after (a model file's metadata: a tuning record with one fold
            holds NaN); the bounds on size, values and nesting stay.

    Example:
        >>> parse_json(b'{"a": 1e999}', "m.json", "manifest")
        Traceback (most recent call last):
        ...
        ValueError: 'm.json' is not valid JSON (1e999 is out of the range of a float); expected a manifest
    """
    hint = f"; {fix}" if fix else ""
    items = json_items(blob)
    if items > MAX_JSON_ITEMS:
        raise ValueError(f"{str(where)!r} holds up to {items:,} JSON values, more than the {MAX_JSON_ITEMS:,} of any "
                         f"{what} vaeaug writes: it is not {_a(what)} vaeaug wrote{hint}")
    try:
        text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
        strict: dict[str, Any] = {} if allow_nan else {"parse_constant": _no_constant, "parse_float": _finite_float}
        doc = json.loads(text, **strict)
    except RecursionError:
        doc = deep = None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise ValueError(f"{str(where)!r} is not valid JSON ({str(e)[:200]}); expected {_a(what)}{hint}") from None
    else:
        deep = _too_deep(doc)
    if deep is not False:  # later code recurses over what it reads
        raise ValueError(f"{str(where)!r} is nested more than {MAX_JSON_DEPTH} levels deep: it is not {_a(what)} "
                         f"vaeaug wrote{hint}")
    return doc


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is out of the range of a float")
    return v


def read_json(path: str | os.PathLike[str], what: str, *, max_bytes: int, fix: str = "") -> Any:
    """Parse a JSON file of at most ``max_bytes`` (a regular file, :func:`read_bounded`; :func:`parse_json`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file, too large, not UTF-8 or not strict JSON (the message names the file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('{"a": NaN}')
        >>> read_json(p, "test file", max_bytes=100)
        Traceback (most recent call last):
        ...
        ValueError: ... is not valid JSON (NaN is not a number JSON allows); expected a test file
    """
    return parse_json(read_bounded(path, what, max_bytes=max_bytes), path, what, fix=fix)


def canonical_json(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj`` (sorted keys, no spaces, ASCII, no NaN): what checksums cover.

    Example:
        >>> canonical_json({"b": 1, "a": [1.5]})
        b'{"a":[1.5],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


# ---------------------------------------------------------------------------------------------------
# Atomic writes


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once: os.umask is process-wide, changing it per write would race


def _limits(folder: Path) -> tuple[int, int]:
    """The longest file name (bytes) and path the file system of ``folder`` (an existing folder) holds."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def check_name(path: str | os.PathLike[str], what: str = "output") -> None:
    """Refuse now a path the file system would refuse after the work: a name longer than it holds (``NAME_MAX``
    bytes, 255 on most) or a path longer than ``PATH_MAX``. :func:`write_atomic` shortens its temporary names to
    fit, so a path that passes here can be written.

    Example:
        >>> check_name("/tmp/" + "m" * 300 + ".vae")
        Traceback (most recent call last):
        ...
        ValueError: output '/tmp/mmm...mmm.vae' has a name of 304 bytes, more than the 255 a file name can have ...
    """
    text = str(path)
    shown = repr(text if len(text) <= 60 else text[:28] + "..." + text[-28:])
    full = Path(os.path.abspath(path))
    existing = next(p for p in [full.parent, *full.parent.parents] if p.is_dir())
    name_max, path_max = _limits(existing)
    for part in full.relative_to(existing).parts:  # those that will be created
        size = len(os.fsencode(part))
        if size > name_max:
            raise ValueError(f"{what} {shown} has a name of {size} bytes, more than the {name_max} a file name can "
                             "have here; choose a shorter name")
    size = len(os.fsencode(str(full)))
    if size >= path_max:
        raise ValueError(f"{what} {shown} is a path of {size} bytes, more than the {path_max - 1} this system allows; "
                         "choose a shorter path")


def _tmp_stem(name: str, room: int) -> str:
    """``name``, or a prefix of it and 8 hex digits of its SHA-256 (the same every time), in ``room`` bytes."""
    if len(os.fsencode(name)) <= room:
        return name
    cut = name
    while cut and len(os.fsencode(cut)) > room - 9:
        cut = cut[:-1]
    return f"{cut}-{sha256_bytes(os.fsencode(name))[:8]}"


def write_atomic(path: str | os.PathLike[str], blob: bytes, *, tmp_tag: str | None = None,
                 exclusive: bool = False) -> Path:
    """Write ``blob`` to ``path`` through a temporary file renamed into place (fsynced, umask honoured).

    A crash leaves either the old file or the new one, never half of one. The temporary file's name is
    ``path``'s, shortened when needed so that it fits wherever ``path`` does (:func:`check_name`).

    Args:
        path: destination.
        blob: the bytes.
        tmp_tag: name the temporary file ``.<name>.<tag>.tmp`` instead of a random name, so that
            the writer that owns the tag can find and remove it after a crash.
        exclusive: publish with a hard link, which fails with ``FileExistsError`` if ``path``
            exists (two writers racing: exactly one wins).

    Returns:
        ``path``.

    Raises:
        ValueError: ``path`` is longer than the file system holds (:func:`check_name`).
    """
    path = Path(path)
    check_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name_max, _ = _limits(path.parent)
    if tmp_tag is None:  # ".<stem>." + 8 random characters + ".tmp"
        stem = _tmp_stem(path.name, name_max - 14)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
    else:
        stem = _tmp_stem(path.name, name_max - len(os.fsencode(tmp_tag)) - 6)
        tmp = str(path.with_name(f".{stem}.{tmp_tag}.tmp"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # like open(): mkstemp's 0o600 would make the file private
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            Path(tmp).unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
