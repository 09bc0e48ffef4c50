"""The sample store: a split's SDF samples packed once into two uncompressed arrays that training processes
map into memory instead of loading (``deepsdf-ad prep pack DATA``, or the first ``train`` that needs it).

Layout, beside the samples it was packed from::

    DATA/store/<split>.pos.npy   float32 (P, D+1): the finite ``pos`` rows of every shape, shape after shape
    DATA/store/<split>.neg.npy   float32 (Q, D+1): the same for ``neg``
    DATA/store/<split>.json      the index and the checksum manifest (written last: a store without it is
                                 incomplete and is packed again)

The index gives each shape's key, its sample file (relative to DATA), the first row and the row count of
its ``pos`` and ``neg`` blocks. Rows are cleaned as the in-memory bank cleans them (:func:`finite_samples`),
so a shape's block holds exactly the rows the bank would hold. The manifest records every source file's
size, modification time and SHA-256, and each array's size, modification time and the SHA-256 of its data
(the bytes after the ``.npy`` header).

Opening a store (:func:`open_store`) checks sizes always (a truncated file is found at once) and checksums of
every file whose modification time changed (``full``: of every file), and refuses a store that no longer
matches its sources or its split with a :class:`DataError` naming the file and ``prep pack --rebuild``. A
store is rebuilt only on request, never silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.folders import LOCK, FolderLock
from deepsdf_ad.data_prep.formats import (
    DataError,
    DataRoot,
    ShapeRef,
    atomic_path,
    file_sha256,
    is_temp_file,
    load_sdf_samples,
    write_json,
)
from deepsdf_ad.data_prep.log import progress_bar

STORE_DIR = "store"
"""``DATA/store``: the packed splits."""
FORMAT = "deepsdf-ad sample store"
VERSION = 1
SIDES = ("pos", "neg")
DTYPE = np.dtype("<f4")


def finite_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The rows of a sample file that training uses: ``(pos, neg, dropped, rows)``.

    Rows with a NaN or infinite value are dropped (``dropped`` of the file's ``rows`` in all); a side left
    without rows borrows the other side's, so every draw is defined. Raises :class:`DataError` when no finite
    row is left.
    """
    pos, neg = load_sdf_samples(path)
    rows = len(pos) + len(neg)
    pos, neg = pos[np.isfinite(pos).all(axis=1)], neg[np.isfinite(neg).all(axis=1)]
    if len(pos) == 0 and len(neg) == 0:
        raise DataError(f"{path}: no finite samples")
    return (pos if len(pos) else neg), (neg if len(neg) else pos), rows - len(pos) - len(neg), rows


def store_paths(root: DataRoot, split: str = "train") -> dict[str, Path]:
    """The files of ``split``'s store: ``{"pos", "neg", "manifest"}``."""
    folder = root.root / STORE_DIR
    return {"pos": folder / f"{split}.pos.npy", "neg": folder / f"{split}.neg.npy",
            "manifest": folder / f"{split}.json"}


def store_exists(root: DataRoot, split: str = "train") -> bool:
    """Whether ``split`` has a complete store (its manifest is written last)."""
    return store_paths(root, split)["manifest"].is_file()


def rebuild_hint(root: DataRoot) -> str:
    split = f" --split {root.split_file}" if root.split_file is not None else ""
    return f"rebuild the store with 'deepsdf-ad prep pack {root.root}{split} --rebuild'"


# ---- writing ---------------------------------------------------------------------------------
def _npy_header(rows: int, width: int) -> bytes:
    buf = io.BytesIO()
    header = {"descr": DTYPE.str, "fortran_order": False, "shape": (rows, width)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


class _ArrayWriter:
    """Rows appended to an ``.npy`` file whose header is written last (its length does not depend on the
    row count: NumPy pads it to 64 bytes and leaves room for a growing first axis)."""

    def __init__(self, path: Path, width: int):
        self.path, self.width, self.rows = path, width, 0
        self.sha = hashlib.sha256()
        self.file = open(path, "wb")  # noqa: SIM115 - closed in finish(), or by the caller's ExitStack
        self.header = len(_npy_header(0, width))
        self.file.write(b"\0" * self.header)

    def append(self, rows: np.ndarray) -> int:
        """Append ``rows`` (k, width); returns the index of the first one."""
        data = np.ascontiguousarray(rows, DTYPE)
        self.file.write(data.data)
        self.sha.update(data.data)
        first, self.rows = self.rows, self.rows + len(data)
        return first

    def finish(self) -> str:
        """Write the header; returns the SHA-256 of the data."""
        header = _npy_header(self.rows, self.width)
        if len(header) != self.header:
            raise DataError(f"{self.path}: {self.rows} rows do not fit the .npy header written first")
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha.hexdigest()


def _source_entry(root: DataRoot, ref: ShapeRef) -> dict:
    st = ref.sdf.stat()
    return {"key": ref.key, "file": _relative(root, ref.sdf), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": file_sha256(ref.sdf)}


def _relative(root: DataRoot, path: Path) -> str:
    with contextlib.suppress(ValueError):
        return path.relative_to(root.root).as_posix()
    return str(path)


def _refuse_foreign(folder: Path) -> None:
    """``DATA/store`` holds only files this module writes; anything else there is somebody's and stays."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        ours = p.name == LOCK or is_temp_file(p) or p.name.endswith((".pos.npy", ".neg.npy", ".json"))
        if not ours:
            raise DataError(f"{p}: {folder} holds a file the sample store did not write; move it, or the "
                            "store cannot be written there")


def pack_store(root: DataRoot, split: str = "train", progress: bool = False) -> dict:
    """Pack ``split``'s samples into ``DATA/store`` (replacing a store of that split); returns the manifest.

    Every source file is read once; the arrays are written to temp files and renamed into place, then the
    manifest is written. Memory use stays at one shape's samples.
    """
    refs = root.shapes(split)
    paths = store_paths(root, split)
    folder = paths["manifest"].parent
    _refuse_foreign(folder)
    with FolderLock(folder, "deepsdf-ad prep pack"):
        for p in folder.iterdir():  # temp files of a pack that was killed
            if is_temp_file(p):
                p.unlink(missing_ok=True)
        paths["manifest"].unlink(missing_ok=True)  # from here on the old store is gone, whatever happens
        shapes, dim, dropped = [], None, 0
        with contextlib.ExitStack() as stack:
            tmp = {s: stack.enter_context(atomic_path(paths[s])) for s in SIDES}
            writers: dict[str, _ArrayWriter] = {}
            bar = stack.enter_context(progress_bar(len(refs), "pack samples", "shape", progress))
            for ref in refs:
                pos, neg, lost, _ = finite_samples(ref.sdf)  # first: a missing or unreadable file is named
                entry = _source_entry(root, ref)
                width = pos.shape[1]
                if dim is None:
                    dim = width - 1
                    writers = {s: _ArrayWriter(tmp[s], width) for s in SIDES}
                    for w in writers.values():
                        stack.callback(w.file.close)
                elif width != dim + 1:
                    raise DataError(f"{ref.sdf}: samples have {width - 1} coordinates but {refs[0].sdf} "
                                    f"has {dim}")
                for side, rows in zip(SIDES, (pos, neg), strict=True):
                    entry[side] = [writers[side].append(rows), len(rows)]
                entry["dropped"] = lost
                dropped += lost
                shapes.append(entry)
                bar.update(1)
            arrays = {}
            for side in SIDES:
                sha = writers[side].finish()
                arrays[side] = {"file": paths[side].name, "rows": writers[side].rows, "sha256": sha}
        # renamed into place: record what is on disk now
        for side in SIDES:
            st = paths[side].stat()
            arrays[side].update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        split_path = root.split_path(split)
        manifest = {"format": FORMAT, "version": VERSION, "split": split, "split_file": str(split_path),
                    "dim": dim, "dropped": dropped, "arrays": arrays, "shapes": shapes}
        write_json(paths["manifest"], manifest)
    return manifest


# ---- reading ---------------------------------------------------------------------------------
@dataclass
class PackedSamples:
    """An opened store: the arrays mapped read-only, and the index.

    ``pos``/``neg``: (rows, dim + 1) float32 views of the mapped files; ``*_start``/``*_count``: (S,) int64,
    shape ``i``'s rows are ``pos[pos_start[i]:pos_start[i] + pos_count[i]]``.
    """

    folder: Path
    keys: list[str]
    dim: int
    dropped: int
    pos: np.ndarray
    neg: np.ndarray
    pos_start: np.ndarray
    pos_count: np.ndarray
    neg_start: np.ndarray
    neg_count: np.ndarray
    maps: tuple[mmap.mmap, ...]

    def release(self) -> None:
        """Drop this process's mapped pages (``MADV_DONTNEED``): they stay in the page cache, shared, and are
        mapped again when read; the process's resident memory falls back to its own."""
        for m in self.maps:
            with contextlib.suppress(AttributeError, OSError):  # no madvise (not Linux): pages stay mapped
                m.madvise(mmap.MADV_DONTNEED)


def _bad(path: Path, what: str, root: DataRoot) -> DataError:
    return DataError(f"{path}: {what}; {rebuild_hint(root)}")


def _read_manifest(path: Path, root: DataRoot) -> dict:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _bad(path, f"not a readable store manifest ({e})", root) from None
    ok = (isinstance(m, dict) and m.get("format") == FORMAT and isinstance(m.get("shapes"), list)
          and isinstance(m.get("arrays"), dict) and all(isinstance(m["arrays"].get(s), dict) for s in SIDES)
          and m.get("dim") in (2, 3) and all(isinstance(s, dict) for s in m["shapes"]))
    if not ok:
        raise _bad(path, "not a sample store manifest", root)
    if m.get("version") != VERSION:
        raise _bad(path, f"store version {m.get('version')}, this version reads {VERSION}", root)
    return m


def _check_file(path: Path, record: dict, full: bool, sha_of, root: DataRoot, what: str) -> None:
    """``path`` against its ``record`` (bytes, mtime_ns, sha256): the size always, the checksum when the
    modification time differs or ``full``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _bad(path, f"file not found ({what})", root) from None
    if st.st_size != record.get("bytes"):
        raise _bad(path, f"{st.st_size} bytes, but {record.get('bytes')} when the store was packed "
                         f"(truncated or replaced: {what})", root)
    if (full or st.st_mtime_ns != record.get("mtime_ns")) and sha_of(path) != record.get("sha256"):
        raise _bad(path, f"changed since the store was packed (SHA-256 differs: {what})", root)


def _data_sha256(path: Path) -> str:
    """SHA-256 of an ``.npy`` file's data (the bytes after its header)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        _read_header(f, path)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_header(f, path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, data offset) of an ``.npy`` file of float32 rows (never unpickles: the dtype must be
    ``<f4``)."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy version {version[0]}.{version[1]}")
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npy header ({e})") from None
    if dtype != DTYPE or fortran or len(shape) != 2:
        raise DataError(f"{path}: holds {dtype} {shape}, not C-ordered float32 rows")
    return shape, f.tell()


def _map(path: Path, rows: int, width: int, root: DataRoot) -> tuple[np.ndarray, mmap.mmap]:
    with open(path, "rb") as f:
        try:
            shape, offset = _read_header(f, path)
        except DataError as e:
            raise _bad(path, str(e).removeprefix(f"{path}: "), root) from None
        if shape != (rows, width):
            raise _bad(path, f"holds {shape[0]} rows of {shape[1]}, the manifest says {rows} of {width}",
                       root)
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(m, DTYPE, count=rows * width, offset=offset).reshape(rows, width), m


def open_store(root: DataRoot, refs: list[ShapeRef], split: str = "train",
               full: bool = False) -> PackedSamples:
    """Map ``split``'s store for the shapes ``refs`` (the split as it is now), after checking it.

    Raises :class:`DataError` (naming the file and the rebuild command) when the store is missing, was packed
    for other shapes, or a source file or an array changed since it was packed (sizes always; SHA-256 of
    files whose modification time changed, or of every file with ``full``).
    """
    paths = store_paths(root, split)
    if not paths["manifest"].is_file():
        raise DataError(f"{paths['manifest']}: no sample store; pack it with "
                        f"'deepsdf-ad prep pack {root.root}'")
    m = _read_manifest(paths["manifest"], root)
    files = [_relative(root, r.sdf) for r in refs]
    packed = [s.get("file") for s in m["shapes"]]
    if files != packed:
        first = next((i for i, (a, b) in enumerate(zip(files, packed, strict=False)) if a != b),
                     min(len(files), len(packed)))
        raise _bad(paths["manifest"], f"packed for other shapes than {root.split_path(split)} lists "
                   f"({len(packed)} packed, {len(files)} listed; they differ at position {first})", root)
    for ref, s in zip(refs, m["shapes"], strict=True):
        _check_file(ref.sdf, s, full, file_sha256, root, "a sample file the store was packed from")
    width = m["dim"] + 1
    arrays, maps, index = {}, [], {}
    for side in SIDES:
        rec = m["arrays"][side]
        _check_file(paths[side], rec, full, _data_sha256, root, "a store array")
        try:
            table = np.array([s[side] for s in m["shapes"]], np.int64).reshape(len(m["shapes"]), 2)
        except (KeyError, TypeError, ValueError):
            raise _bad(paths["manifest"], f"the index of '{side}' is malformed", root) from None
        rows = int(rec.get("rows", -1))
        if len(table) and ((table[:, 1] < 1).any() or (table[:, 0] < 0).any() or (table.sum(1) > rows).any()):
            raise _bad(paths["manifest"], f"the index of '{side}' points outside {paths[side].name}", root)
        arrays[side], mp = _map(paths[side], rows, width, root)
        maps.append(mp)
        index[side] = table
    return PackedSamples(paths["manifest"].parent, [r.key for r in refs], m["dim"], int(m.get("dropped", 0)),
                         arrays["pos"], arrays["neg"], index["pos"][:, 0].copy(), index["pos"][:, 1].copy(),
                         index["neg"][:, 0].copy(), index["neg"][:, 1].copy(), tuple(maps))
