"""The tar shards of a ``webdataset`` set: written byte for byte the same every time, parsed strictly.

Writing (:func:`sample_members`, :func:`tar_bytes`): per sample, in this order, ``KEY.png`` or
``KEY.npy`` (the image; which one: :func:`vaeaug.generated.format.payload_for`), ``KEY.cls`` (the label
as ASCII digits, ``-1`` for unlabelled data) and ``KEY.json`` (the sample's record: ``index``,
``source``, ``variant`` (-1 for the real sample), ``synthetic``, ``label`` and ``class_name``, ``null``
without class names; canonical JSON). ``KEY`` is the sample's index in the set, 8 digits or more, so
keys are unique across the shards and sort in the set's order. A PNG is ``(H, W)`` gray or ``(H, W, 3)``
RGB, 8-bit, written by PIL; a ``.npy`` is the ``(C, H, W)`` sample in the data's dtype, written with
``allow_pickle=False``. Every member is a regular file of mode 0644, owner 0:0, empty owner names and
mtime 0, in a POSIX ustar archive (no pax or GNU extension headers), padded as ``tarfile`` pads.

Reading (:func:`index_tar`): the tar's size and SHA-256 against the manifest first; then its 512-byte
headers one at a time, never trusting one: each must be a ustar header with a valid checksum that
describes a regular file (a link, a device, a folder, a FIFO, a pax or GNU extension is refused), named
what the layout says (an absolute name or ``..`` is refused as such), no larger than its kind can be
(``.npy``: exactly its header and data; PNG: bounded by its pixels; ``.cls`` 18 bytes; ``.json`` the
record the layout implies, byte for byte); after the last expected member only the zero blocks that end
an archive may follow. Nothing is extracted, no member name becomes a path, every read is bounded.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

from vaeaug.files import FileId, canonical_json, check_same_file, file_id, open_regular, sha256_open

__all__ = ["sample_key", "png_bytes", "record_bytes", "sample_members", "tar_bytes", "Payload", "png_payload",
           "TarIndex", "index_tar", "TarImages", "MEMBERS_PER_SAMPLE", "CHANGED"]

BLOCK = 512
CHANGED = "the set changed after it was opened; never edit a set in use - regenerate it into a new folder"
Fail = Callable[[str], NoReturn]
_RECORD = 20 * BLOCK  # tarfile pads an archive to a multiple of this
MEMBERS_PER_SAMPLE = 3  # image, .cls, .json
_MAX_CLS = 18  # digits of a label (< 2**63)
_CLS = re.compile(rb"-1|0|[1-9][0-9]{0,17}")  # what str(label) writes: -1 (unlabelled) or a label >= 0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR = {1: 0, 3: 2}  # channels -> IHDR colour type: gray, RGB
_KINDS = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
          b"5": "a directory", b"6": "a FIFO", b"7": "a contiguous file", b"x": "a pax extended header",
          b"g": "a pax global header", b"L": "a GNU long name", b"K": "a GNU long link name"}


def sample_key(index: int) -> str:
    """The WebDataset key of sample ``index``: its index in 8 digits or more (no dot, so readers split it right).

    Example:
        >>> sample_key(31), sample_key(123456789)
        ('00000031', '123456789')
    """
    return f"{index:08d}"


def png_bytes(img: np.ndarray) -> bytes:
    """A ``(C, H, W)`` uint8 image, ``C`` 1 or 3, as PNG bytes (gray or RGB; lossless, the same bytes every time).

    Example:
        >>> png_bytes(np.zeros((1, 2, 2), np.uint8))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def record_bytes(index: int, source: int, variant: int, label: int, class_names: list[str] | None) -> bytes:
    """The ``.json`` member of a sample: its record as canonical JSON.

    Example:
        >>> record_bytes(4, 1, 0, 2, ["a", "b", "c"])
        b'{"class_name":"c","index":4,"label":2,"source":1,"synthetic":true,"variant":0}'
    """
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else None
    return canonical_json({"index": index, "source": source, "variant": variant, "synthetic": variant >= 0,
                           "label": label, "class_name": name})


def sample_members(index: int, image: bytes, payload: str, row: Any,
                   class_names: list[str] | None) -> list[tuple[str, bytes]]:
    """The three members of sample ``index``: ``(name, bytes)`` of its image, ``.cls`` and ``.json``.

    Args:
        index: the sample's index in the set.
        image: its image member's bytes (:func:`png_bytes`, or :func:`vaeaug.generated.shards.npy_bytes`).
        payload: its extension, ``"png"`` or ``"npy"``.
        row: its label ``y``, ``source`` and ``variant`` (a row of :data:`vaeaug.generated.shards.META_DTYPE`).
        class_names: the data's class names, or ``None``.

    Example:
        >>> row = {"y": 3, "source": 2, "variant": -1}
        >>> [name for name, _ in sample_members(7, b"...", "png", row, None)]
        ['00000007.png', '00000007.cls', '00000007.json']
    """
    key, label = sample_key(index), int(row["y"])
    return [(f"{key}.{payload}", image), (f"{key}.cls", str(label).encode("ascii")),
            (f"{key}.json", record_bytes(index, int(row["source"]), int(row["variant"]), label, class_names))]


def _header(name: str, size: int) -> bytes:
    """The ustar header of a regular file: what ``tarfile`` writes for a ``TarInfo`` with mode 0644, owner 0:0,
    empty owner names and mtime 0 (a test pins the two equal), without its 30 us a member."""
    raw = name.encode("ascii")
    if len(raw) > 100 or size >= 8**11:
        raise ValueError(f"a tar member named {name[:120]!r} of {size} bytes does not fit a ustar header")
    block = bytearray(BLOCK)
    block[:len(raw)] = raw
    block[100:148] = b"0000644\0" b"0000000\0" b"0000000\0" + b"%011o\0" % size + b"00000000000\0"
    block[148:157] = b"        0"  # the checksum counted as spaces; a regular file
    block[257:265] = b"ustar\x0000"
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A ustar archive of ``members`` in their order, every header field fixed: the same bytes every time, the
    bytes ``tarfile`` writes (``format=USTAR_FORMAT``, each ``TarInfo`` with mode 0644, uid and gid 0, empty
    ``uname`` and ``gname``, mtime 0), padded to its records of 10240 bytes.

    Example:
        >>> import tarfile
        >>> blob = tar_bytes([("00000000.cls", b"3")])
        >>> with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        ...     [(m.name, m.size, m.mtime, m.uid, m.uname, oct(m.mode), m.isreg()) for m in tar]
        [('00000000.cls', 1, 0, 0, '', '0o644', True)]
        >>> len(blob)
        10240
    """
    parts: list[bytes] = []
    for name, blob in members:
        parts += [_header(name, len(blob)), blob, bytes(-len(blob) % BLOCK)]
    size = sum(map(len, parts)) + 2 * BLOCK  # the end: two zero blocks, then zeros to a whole record
    parts.append(bytes(2 * BLOCK + -size % _RECORD))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Payload:
    """How a sample's image member is checked and read (PNG here, :func:`png_payload`; ``.npy`` by the reader,
    from :mod:`vaeaug.generated.shards`, whose checks it shares).

    ``check(head, size, where, fix)`` gets the member's first ``head`` bytes and its size and raises a
    ``ValueError`` (about ``where``, ending with ``fix``) if they are not an image of the set;
    ``decode(blob, where, fix)`` makes the ``(C, H, W)`` array of a whole member, or raises the same way.
    Both are picklable (a Dataset that holds them goes to DataLoader workers).
    """

    ext: str  # "png" or "npy"
    most: int  # the most bytes a member can have
    head: int  # bytes of it that check reads
    check: Callable[[bytes, int, str, str], None]
    decode: Callable[[bytes, str, str], np.ndarray]


@dataclass(frozen=True)
class TarIndex:
    """A checked tar shard: where each sample's image member lies, and each sample's label."""

    offsets: np.ndarray  # int64: the first byte of each sample's image in the tar
    sizes: np.ndarray  # int64: its size
    labels: np.ndarray  # int64: each sample's label (-1: unlabelled)
    file: FileId  # the tar that was hashed and parsed: a reopened copy must find it unchanged


def _octal(field: bytes, what: str, fail: Fail) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or not re.fullmatch(rb"[0-7]{1,12}", text):
        fail(f"a header whose {what} is not an octal number ({text[:12]!r})")
    return int(text, 8)


def _member(block: bytes, want: str, fail: Fail) -> int:
    """The size of the member whose header is ``block``, refusing anything but the regular file ``want``."""
    if block == bytes(BLOCK):
        fail(f"an end of archive where {want} should be (fewer members than the manifest's samples)")
    stored = _octal(block[148:156], "checksum", fail)
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        fail(f"a block that is not a tar header (its checksum is wrong) where {want} should be")
    if block[257:263] != b"ustar\0" or block[263:265] != b"00":
        fail(f"a header that is not POSIX ustar (magic {block[257:265]!r}) where {want} should be; vaeaug writes "
             "ustar only")
    raw = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0]
    name = (prefix + b"/" + raw if prefix else raw).decode("ascii", "backslashreplace")
    kind = block[156:157]
    if kind in _KINDS:
        fail(f"member {name[:120]!r} is {_KINDS[kind]} (vaeaug writes regular files only; links, devices, folders "
             f"and extension headers are refused) where {want} should be")
    if kind not in (b"0", b"\0"):
        fail(f"member {name[:120]!r} of unknown type {kind!r} where {want} should be")
    if name.startswith("/") or ".." in name.split("/"):
        fail(f"member {name[:120]!r} has an absolute path or '..' (refused) where {want} should be")
    if name != want:
        fail(f"member {name[:120]!r} where {want} should be (members out of order, renamed or added)")
    return _octal(block[124:136], "size", fail)


def png_payload(shape: tuple[int, ...]) -> Payload:
    """PNG image members of ``(C, H, W)`` samples: at most twice their filtered pixels and 4 KiB; the check reads
    the signature and ``IHDR`` (8-bit gray or RGB, the set's height and width), the decoder checks them again
    before it decodes a pixel.

    Example:
        >>> p = png_payload((1, 2, 2))
        >>> p.decode(png_bytes(np.full((1, 2, 2), 7, np.uint8)), "a.png", "write it again").tolist()
        [[[7, 7], [7, 7]]]
    """
    most = 2 * (math.prod(shape) + shape[1]) + 4096
    return Payload("png", most, 33, functools.partial(_check_png, shape), functools.partial(_decode_png, shape))


def _check_png(shape: tuple[int, ...], head: bytes, size: int, where: str, fix: str) -> None:
    c, h, w = shape
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[8:16] != b"\0\0\0\rIHDR":
        raise ValueError(f"{where} is not a PNG; {fix}")
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    if (width, height, depth, color) != (w, h, 8, _PNG_COLOR.get(c)):
        raise ValueError(f"{where} is a {width}x{height} PNG of bit depth {depth} and colour type {color}; the "
                         f"manifest says {w}x{h}, 8-bit {'gray' if c == 1 else 'RGB'}; {fix}")


def index_tar(root: Path, shard: dict[str, Any], manifest: dict[str, Any], payload: Payload) -> TarIndex:
    """Check a shard's tar and index it: its size and SHA-256 against the manifest before a byte is parsed, then
    every member against the layout (see the module's documentation), each image by ``payload``.

    Raises:
        ValueError: naming the file, what was expected and what came, and how to repair it.
    """
    entry, i = shard["files"]["tar"], shard["index"]
    name = entry["name"]
    where = f"{name} (shard {i} of {root})"
    fix = (f"run vaeaug verify {root}; to repair, delete shard {i}'s files ({root / f'shard-{i:05d}'}*) and run the "
           "same vaeaug generate command again")
    try:
        f = open_regular(root / name, "generated-set shard (.tar)")
    except FileNotFoundError:
        raise ValueError(f"{name} is missing; {fix}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != entry["bytes"]:
            raise ValueError(f"{name} is corrupt ({size} bytes, the manifest says {entry['bytes']}); {fix}")
        if sha256_open(f, str(root / name)) != entry["sha256"]:  # the bytes then parsed, not a path's
            raise ValueError(f"{name} is corrupt (SHA-256 differs from the manifest); {fix}")
        return _parse(f, size, shard, manifest, payload, where, fix, file_id(f))


def _parse(f: BinaryIO, size: int, shard: dict[str, Any], manifest: dict[str, Any], payload: Payload, where: str,
           fix: str, fid: FileId) -> TarIndex:
    """The members of a tar whose bytes were checked, one header at a time (reads bounded by ``size``)."""
    def fail(why: str) -> NoReturn:
        raise ValueError(f"{where} holds {why}; {fix}")

    args, names = manifest["arguments"], manifest["data"]["class_names"]
    r = int(args["include_real"])
    per = args["variants_per_sample"] + r
    first, count = int(shard["first"]), int(shard["count"])
    offsets, sizes, labels = np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, np.int64)
    pos = 0

    def read_member(want: str, most: int) -> tuple[int, int]:
        nonlocal pos
        if pos + BLOCK > size:
            fail(f"no header where {want} should be (the archive is cut short)")
        f.seek(pos)
        n = _member(f.read(BLOCK), want, fail)
        start = pos + BLOCK
        if n > most:
            fail(f"member {want} of {n} bytes, more than the {most} the manifest implies")
        if start + n > size:
            fail(f"member {want} of {n} bytes past the end of the archive")
        pos = start + -(-n // BLOCK) * BLOCK
        return start, n

    for j in range(count):
        s = first + j
        source, variant = s // per, s % per - r
        key = sample_key(s)
        start, n = read_member(f"{key}.{payload.ext}", payload.most)
        f.seek(start)
        payload.check(f.read(min(n, payload.head)), n, f"{where}: member {key}.{payload.ext}", fix)
        offsets[j], sizes[j] = start, n
        start, n = read_member(f"{key}.cls", _MAX_CLS)
        f.seek(start)
        text = f.read(n)
        if not _CLS.fullmatch(text):
            fail(f"member {key}.cls holding {text[:20]!r}, not a label as vaeaug writes it (-1, or digits without "
                 "a leading 0)")
        label = int(text)
        want = record_bytes(s, source, variant, label, names)
        start, n = read_member(f"{key}.json", len(want))
        f.seek(start)
        if f.read(n) != want:
            fail(f"member {key}.json that is not the record the layout implies (index {s}, source {source}, variant "
                 f"{variant}, label {label})")
        labels[j] = label
    rest = size - pos
    f.seek(pos)
    tail = f.read(min(rest, _RECORD + 2 * BLOCK) + 1)
    if len(tail) >= BLOCK and tail[:BLOCK] != bytes(BLOCK):
        fail(f"more members (or other data) after the manifest's {count} samples of {MEMBERS_PER_SAMPLE} members")
    if not (2 * BLOCK <= rest <= _RECORD + 2 * BLOCK and rest % BLOCK == 0 and tail == bytes(rest)):
        fail(f"{rest} bytes after its last member where an archive ends with 2 to 22 zero blocks")
    return TarIndex(offsets, sizes, labels, fid)


class TarImages:
    """The images of a checked webdataset set, read by sample from the tars (``os.pread``; nothing mapped).

    The files are reopened lazily in each process (a pickled copy holds no file), each checked to be the
    very file that was hashed and parsed, unchanged (its :data:`~vaeaug.files.FileId`), and each image's
    header checked when it is read. :meth:`close` closes what this copy opened.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], indexes: list[TarIndex], payload: Payload) -> None:
        self.root, self.manifest, self.indexes, self.payload = root, manifest, indexes, payload
        self._files: list[BinaryIO | None] = [None] * len(indexes)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = [None] * len(self.indexes)
        return state

    def _file(self, m: int) -> BinaryIO:
        f = self._files[m]
        if f is None:
            entry = self.manifest["shards"][m]["files"]["tar"]
            f = open_regular(self.root / entry["name"], "generated-set shard (.tar)")
            try:
                check_same_file(f, self.indexes[m].file, str(self.root / entry["name"]))
            except ValueError:
                f.close()
                raise
            self._files[m] = f
        return f

    def close(self) -> None:
        """Close the tars this copy opened (they reopen when read again)."""
        for m, f in enumerate(getattr(self, "_files", [])):
            if f is not None:
                f.close()
                self._files[m] = None

    def __del__(self) -> None:  # a dataset dropped with its tars open closes them (no ResourceWarning)
        self.close()

    def image(self, m: int, j: int) -> np.ndarray:
        """Sample ``j`` of shard ``m``: ``(C, H, W)`` in the stored dtype."""
        offset, size = int(self.indexes[m].offsets[j]), int(self.indexes[m].sizes[j])
        blob = os.pread(self._file(m).fileno(), size, offset)
        where = f"{self.manifest['shards'][m]['files']['tar']['name']} of {self.root}, sample {j}"
        if len(blob) != size:
            raise ValueError(f"{where} is cut short; {CHANGED}")
        return self.payload.decode(blob, where, CHANGED)


def _decode_png(shape: tuple[int, ...], blob: bytes, where: str, fix: str) -> np.ndarray:
    """A PNG member as a ``(C, H, W)`` uint8 array: its size checked before its pixels are decoded."""
    from PIL import Image

    c, h, w = shape
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(blob), formats=["PNG"]) as img:
                if img.size != (w, h) or img.mode != ("L" if c == 1 else "RGB"):
                    raise ValueError(f"{where} is a {img.size[0]}x{img.size[1]} {img.mode} PNG; the manifest says "
                                     f"{w}x{h} {'L' if c == 1 else 'RGB'}; {fix}")
                img.load()
                arr = np.asarray(img, dtype=np.uint8)
        except ValueError:
            raise
        except Exception as e:  # PIL raises many types on bad bytes
            raise ValueError(f"{where} is not a readable PNG ({type(e).__name__}: {e}); {fix}") from None
    return (arr[None] if c == 1 else arr.transpose(2, 0, 1)).copy()
