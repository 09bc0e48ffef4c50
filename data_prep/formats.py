"""The one module that reads and writes data files.

Layout of a data root (``DATA``), compatible with DeepSDF's preprocessed data::

    DATA/sdf/<category>/<id>.npz        float32 ``pos`` and ``neg``, each (N, D+1): coordinates, sdf
    DATA/norm/<category>/<id>.npz       ``offset`` (D,) and ``scale`` (): normalised = (orig + offset) * scale
    DATA/surface/<category>/<id>.ply    surface points (30,000 by default), normalised frame
    DATA/scans/<category>/<id>_<k>.ply  partial scans of test shapes (+ a ``.json`` sidecar each)
    DATA/splits/train.json, test.json   ``{"<dataset>": {"<category>": [ids]}}``
    DATA/manifest.json                  every input with its status, the sampling parameters, the tool version
    DATA/shards/shard-<I>-of-<N>.json   shard manifests of ``prep ... --shard I/N`` (joined by ``prep merge``)

``prep scenes`` writes the same layout with the category ``scene``, plus::

    DATA/scene_meshes/<id>.ply          the composed scene mesh, in the scene's normalised frame
    DATA/scene_meshes/<id>.json         the scene frame and its objects (file, category, transform, box)

DeepSDF's own layout (``SdfSamples/<dataset>/<class>/<id>.npz``, ``NormalizationParameters/...``,
``SurfaceSamples/...``) is read as is by :class:`DataRoot`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.log import note

# ---- keys and folder names -------------------------------------------------------------------
POS = "pos"
NEG = "neg"
OFFSET = "offset"
SCALE = "scale"
SDF_DIR = "sdf"
NORM_DIR = "norm"
SURFACE_DIR = "surface"
SCANS_DIR = "scans"
SPLITS_DIR = "splits"
MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
"""``DATA/shards/shard-<I>-of-<N>.json``: the manifest of one shard of a sharded prep (``--shard I/N``)."""
SCENE_MESHES_DIR = "scene_meshes"
SCENE_CATEGORY = "scene"
TRAIN_SPLIT = "train.json"
TEST_SPLIT = "test.json"
DATASET_NAME = "deepsdf-ad"
DEEPSDF_SDF_DIR = "SdfSamples"
DEEPSDF_NORM_DIR = "NormalizationParameters"
DEEPSDF_SURFACE_DIR = "SurfaceSamples"
MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl")
POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".npy", ".npz", ".obj", ".off", ".stl")


class DataError(ValueError):
    """Bad input data: the message names the file, what is wrong, and what to do."""


# ---- atomic writes ---------------------------------------------------------------------------
TEMP_PREFIX = ".deepsdf-ad-tmp-"
"""Temporary files are ``TEMP_PREFIX + stem + '-' + 8 random characters + suffix``: a prefix no user would
choose, so clean-ups (which match the whole pattern, :data:`TEMP_NAME`) only ever delete files this toolkit
made."""
TEMP_NAME = r"\.deepsdf-ad-tmp-{stem}-[a-z0-9_]{{8}}(\.[A-Za-z0-9]+)?"
"""Regular expression of a temp file's name (format it with ``stem``, escaped), as ``tempfile.mkstemp`` makes
them: 8 random characters."""


def is_temp_file(path: Path, stem: str | None = None) -> bool:
    """Whether ``path`` is a temp file :func:`atomic_path` made (of a file named ``stem``, if given)."""
    pattern = TEMP_NAME.format(stem=re.escape(stem) if stem is not None else r"[^/]*")
    return re.fullmatch(pattern, path.name) is not None and path.is_file()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A killed process leaves at most a temp file (:data:`TEMP_PREFIX`), never a half-written ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.stem}-", suffix=suffix or path.suffix,
                                   dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a file written in place follows the umask
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise _write_error(path, e) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's umask, read without changing it (/proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM,
                errno.ENOTDIR, errno.EISDIR}
"""Errors of writing a file that are the place's, not the program's: a full disk, a read-only file system, a
file where a folder should be, ..."""


def _write_error(path: Path, e: OSError) -> DataError:
    return DataError(f"{path}: cannot write it ({e.strerror or e}); nothing was written there")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); regenerate or fix the file") from None


def shard_manifest_path(root: str | os.PathLike, index: int, count: int) -> Path:
    return Path(root) / SHARDS_DIR / f"shard-{index}-of-{count}.json"


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in blocks) with a :mod:`hashlib` algorithm."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- npz -------------------------------------------------------------------------------------
def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


@contextlib.contextmanager
def _open_npz(path: Path, fix: str = "delete it and re-run prep") -> Iterator[np.lib.npyio.NpzFile]:
    """``np.load`` of an ``.npz`` without ever unpickling; every failure inside the block is a one-line
    DataError naming ``path`` (``fix``: what to do about an unreadable file)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with contextlib.ExitStack() as stack:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: holds a single .npy array, not an .npz archive; rename it to .npy")
            stack.enter_context(z)
            yield z
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled objects, which are refused; re-save it as plain "
                            "arrays") from None
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz ({e}); {fix}") from None


def load_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load named arrays from an ``.npz`` without ever unpickling."""
    path = Path(path)
    with _open_npz(path) as z:
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing arrays {missing} (has {sorted(z.files)})")
        return {k: np.asarray(z[k]) for k in keys}


def save_sdf_samples(path: str | os.PathLike, pos: np.ndarray, neg: np.ndarray) -> None:
    """Write DeepSDF sample file: ``pos`` (sdf > 0) and ``neg`` (sdf <= 0), each (N, D+1) float32."""
    save_npz(path, **{POS: np.ascontiguousarray(pos, np.float32), NEG: np.ascontiguousarray(neg, np.float32)})


def load_sdf_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a DeepSDF sample file; returns float32 ``pos``, ``neg`` of shape (N, D+1)."""
    z = load_npz(path, (POS, NEG))
    pos, neg = z[POS].astype(np.float32, copy=False), z[NEG].astype(np.float32, copy=False)
    for name, a in ((POS, pos), (NEG, neg)):
        if a.ndim != 2 or a.shape[1] not in (3, 4):
            raise DataError(f"{path}: array '{name}' has shape {a.shape}, expected (N, 3) or (N, 4)")
    if pos.shape[1] != neg.shape[1]:
        raise DataError(f"{path}: 'pos' and 'neg' have different widths {pos.shape[1]} and {neg.shape[1]}")
    if len(pos) + len(neg) == 0:
        raise DataError(f"{path}: holds no samples")
    return pos, neg


def save_normalization(path: str | os.PathLike, offset: np.ndarray, scale: float) -> None:
    save_npz(path, **{OFFSET: np.asarray(offset, np.float64), SCALE: np.asarray(scale, np.float64)})


def load_normalization(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    z = load_npz(path, (OFFSET, SCALE))
    try:
        offset = z[OFFSET].astype(np.float64).reshape(-1)
        scale = float(np.asarray(z[SCALE], np.float64).reshape(()))
    except (ValueError, TypeError):
        raise DataError(f"{path}: 'offset' must be a vector and 'scale' one number, got shapes "
                        f"{z[OFFSET].shape} and {z[SCALE].shape}") from None
    check_normalization(path, offset, scale)
    return offset, scale


def check_normalization(path: str | os.PathLike, offset: np.ndarray, scale: float) -> None:
    """Refuse a normalisation that cannot be applied: the offset must be 2 or 3 finite numbers, the scale
    finite and > 0."""
    if (offset.shape not in ((2,), (3,)) or not np.isfinite(offset).all()
            or np.abs(offset).max() > MAX_COORDINATE):
        raise DataError(f"{path}: normalisation offset must be 2 or 3 finite numbers, got "
                        f"{offset.tolist()[:4]}")
    if not (np.isfinite(scale) and 0 < scale < 1 / 1e-15):
        raise DataError(f"{path}: normalisation scale must be a finite positive number, got {scale}")


# ---- point clouds ----------------------------------------------------------------------------
def save_points_ply(
    path: str | os.PathLike,
    points: np.ndarray,
    normals: np.ndarray | None = None,
    comments: tuple[str, ...] = (),
) -> None:
    """Write a binary little-endian PLY point cloud (float32 xyz, optional normals)."""
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    cols = [points]
    props = ["x", "y", "z"]
    if normals is not None:
        cols.append(np.asarray(normals, np.float32))
        props += ["nx", "ny", "nz"]
    data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {len(points)}"] + [f"property float {p}" for p in props] + ["end_header"]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


@dataclass
class PointCloud:
    """Points (N, 3) with optional normals (N, 3) and header comments."""

    points: np.ndarray
    normals: np.ndarray | None = None
    comments: tuple[str, ...] = ()


def _ply_comments(path: Path) -> tuple[str, ...]:
    out = []
    with open(path, "rb") as f:
        for _ in range(200):
            line = f.readline()
            if not line or line.strip() == b"end_header":
                break
            if line.startswith(b"comment "):
                out.append(line[8:].decode("utf-8", "replace").strip())
    return tuple(out)


MAX_POINTS = 20_000_000
"""Largest point cloud read (20 million points take ~0.5 GB as float64); larger files are refused up front."""
MAX_COORDINATE = 1e15
"""Larger absolute coordinates are refused: no real object is that large, and float32 math on it overflows."""
MAX_TEXT_BYTES = 1 << 30
"""Largest text point file (.xyz/.txt) read: 1 GiB."""


def _too_many(path: Path, n: int) -> DataError:
    return DataError(f"{path}: holds {n:,} points, more than the limit {MAX_POINTS:,}; subsample it first "
                     "(e.g. open3d's voxel_down_sample or random_down_sample)")


def _ply_header(path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int] | None:
    """PLY format, elements ``(name, count, [(property, type)])`` (list properties typed 'list') and the
    header's length in bytes; None when the header cannot be parsed (the full reader then reports why).
    Read before the data, so that a header announcing billions of points is refused without reading on."""
    fmt, elements = None, []
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            return None
        for _ in range(10_000):
            line = f.readline()
            if not line:
                return None
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format" and len(words) >= 2:
                fmt = words[1]
            elif words[0] == "element" and len(words) == 3:
                try:
                    elements.append((words[1], int(words[2]), []))
                except ValueError:
                    return None
            elif words[0] == "property" and elements and len(words) >= 3:
                elements[-1][2].append((words[-1], "list" if words[1] == "list" else words[1]))
            elif words[0] == "end_header":
                return (fmt, elements, f.tell()) if fmt else None
    return None


def _check_count(path: Path, suffix: str) -> None:
    """Refuse files whose header announces more than :data:`MAX_POINTS` points, before reading them."""
    if suffix == ".ply":
        header = _ply_header(path)
        if header is not None and header[1] and header[1][0][1] > MAX_POINTS:
            raise _too_many(path, header[1][0][1])
    elif suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception:
            return  # the real read reports it
        if arr.ndim >= 1 and arr.shape[0] > MAX_POINTS:
            raise _too_many(path, int(arr.shape[0]))
    elif suffix in (".xyz", ".txt") and path.stat().st_size > MAX_TEXT_BYTES:
        raise DataError(f"{path}: text point file of {path.stat().st_size / 2**30:.1f} GiB, more than the "
                        f"limit {MAX_TEXT_BYTES / 2**30:.0f} GiB; convert it to a binary .ply or .npy (or "
                        "subsample it)")


def _load_npy(path: Path) -> np.ndarray:
    """``np.load`` of a ``.npy`` without ever unpickling (object arrays are refused by name)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled objects, which are refused; re-save it as plain "
                            "arrays") from None
        raise


NPZ_POINTS = "points"
NPZ_NORMALS = "normals"
"""Arrays of a point-cloud ``.npz``: ``points`` (N, 3) and optional ``normals`` (N, 3); or a single array of
any name, (N, 3) or (N, 6) (points, then normals)."""


def _npz_rows(z: np.lib.npyio.NpzFile, key: str) -> int:
    """Rows of array ``key`` of an open ``.npz``, from its header (nothing else read); -1 when unknown."""
    try:
        with z.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape = read(f)[0]
    except Exception:  # the real read reports it
        return -1
    return int(shape[0]) if shape else -1


def _split_normals(table: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 6) -> points (N, 3) and normals (N, 3); anything else is returned as points (checked later)."""
    if table.ndim == 2 and table.shape[1] == 6:
        return table[:, :3], table[:, 3:]
    return table, None


def _load_npz_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points and normals of an ``.npz`` (see :data:`NPZ_POINTS`), never unpickling."""
    with _open_npz(path, fix=f"re-save it with numpy.savez(FILE, {NPZ_POINTS}=points)") as z:
        if NPZ_POINTS in z.files:
            keys = [NPZ_POINTS] + ([NPZ_NORMALS] if NPZ_NORMALS in z.files else [])
        elif len(z.files) == 1:
            keys = list(z.files)
        else:
            raise DataError(f"{path}: expected an array '{NPZ_POINTS}' (N, 3) (and optionally "
                            f"'{NPZ_NORMALS}' (N, 3)), or a single array; has {sorted(z.files)}")
        for k in keys:
            if _npz_rows(z, k) > MAX_POINTS:
                raise _too_many(path, _npz_rows(z, k))
        arrays = [np.asarray(z[k]) for k in keys]
    for k, a in zip(keys, arrays, strict=True):
        if a.dtype.kind not in "biuf":
            raise DataError(f"{path}: expected numbers in array '{k}', got dtype {a.dtype}")
    if len(arrays) == 1:
        return _split_normals(arrays[0])
    pts, normals = arrays
    if normals.shape != pts.shape:
        raise DataError(f"{path}: '{NPZ_NORMALS}' has shape {normals.shape}, '{NPZ_POINTS}' {pts.shape}; "
                        "they must match")
    return pts, normals


def _loadtxt(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data": an empty file is reported below
        return np.loadtxt(path, ndmin=2)


# ---- PCD (Point Cloud Library) -------------------------------------------------------------------
PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4",
             ("I", 8): "<i8",
             ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}
"""PCD ``TYPE`` and ``SIZE`` -> numpy dtype (PCD's binary data is little-endian)."""
PCD_NORMALS = ("normal_x", "normal_y", "normal_z")
MAX_PCD_HEADER_LINES = 100


@dataclass
class PcdHeader:
    """What a PCD v0.7 header says: fields with their dtype and count, points, data kind, header bytes."""

    fields: list[tuple[str, str, int]]
    points: int
    data: str
    offset: int


def _pcd_header(path: Path) -> PcdHeader:
    """Parse the header of a PCD file (v0.7, as PCL and Open3D write it); a malformed one is a DataError."""
    def bad(what: str) -> DataError:
        return DataError(f"{path}: malformed PCD header: {what}")

    entries: dict[str, list[str]] = {}
    with open(path, "rb") as f:
        for _ in range(MAX_PCD_HEADER_LINES):
            raw = f.readline()
            if not raw:
                raise bad("ends before its DATA line")
            try:
                line = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                raise bad("not ASCII text (is this a PCD file?)") from None
            if not line or line.startswith("#"):
                continue
            key, *values = line.split()
            entries[key.upper()] = values
            if key.upper() == "DATA":
                break
        else:
            raise bad(f"no DATA line in its first {MAX_PCD_HEADER_LINES} lines")
        offset = f.tell()
    missing = [k for k in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT") if k not in entries]
    if missing:
        raise bad(f"no {', '.join(missing)} line")
    names = entries["FIELDS"]
    counts = entries.get("COUNT", ["1"] * len(names))
    if not (len(names) == len(entries["SIZE"]) == len(entries["TYPE"]) == len(counts)) or not names:
        raise bad(f"FIELDS, SIZE, TYPE and COUNT must list as many entries ({len(names)} fields)")
    try:
        sizes, counts = [int(s) for s in entries["SIZE"]], [int(c) for c in counts]
        width, height = int(entries["WIDTH"][0]), int(entries["HEIGHT"][0])
        points = int(entries["POINTS"][0]) if "POINTS" in entries else width * height
    except (ValueError, IndexError):
        raise bad("SIZE, COUNT, WIDTH, HEIGHT and POINTS must be integers") from None
    fields = []
    for name, size, kind, count in zip(names, sizes, entries["TYPE"], counts, strict=True):
        dtype = PCD_TYPES.get((kind.upper(), size))
        if dtype is None or count < 1:
            raise bad(f"field '{name}' has TYPE {kind} SIZE {size} COUNT {count}; "
                      "TYPE must be F (size 4, 8), I or U (size 1, 2, 4, 8), COUNT at least 1")
        fields.append((name, dtype, count))
    if not {"x", "y", "z"} <= set(names):
        raise bad(f"needs the fields x y z, has {' '.join(names)}")
    if min(width, height, points) < 0 or points != width * height:
        raise bad(f"POINTS {points} is not WIDTH x HEIGHT ({width} x {height})")
    data = entries["DATA"][0].lower() if entries["DATA"] else ""
    if data not in ("ascii", "binary", "binary_compressed"):
        raise bad(f"DATA must be ascii, binary or binary_compressed, got '{data}'")
    if points > MAX_POINTS:
        raise _too_many(path, points)
    return PcdHeader(fields, points, data, offset)


def _load_pcd(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (N, 3) and normals (N, 3) or None of a PCD file: ascii and binary read here with numpy,
    binary_compressed (LZF) through open3d when it is installed. Other fields (rgb, intensity, ...) are
    skipped."""
    head = _pcd_header(path)
    names = [name for name, _, _ in head.fields]
    has_normals = all(n in names for n in PCD_NORMALS)
    if head.data == "binary_compressed":
        return _load_pcd_compressed(path, has_normals)
    if head.data == "ascii":
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise DataError(f"{path}: ASCII PCD of {path.stat().st_size / 2**30:.1f} GiB, more than the "
                            f"limit {MAX_TEXT_BYTES / 2**30:.0f} GiB; save it as binary PCD")
        with open(path, "rb") as f:
            f.seek(head.offset)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": checked below
                table = np.loadtxt(f, ndmin=2, dtype=np.float64)
        width = sum(count for _, _, count in head.fields)
        if table.size == 0:
            table = table.reshape(0, width)
        if table.shape != (head.points, width):
            raise DataError(f"{path}: the header announces {head.points:,} points of {width} values, the "
                            f"data holds {table.shape[0]:,} rows of {table.shape[1]}")
        column, start = {}, 0
        for name, _, count in head.fields:
            column[name] = start
            start += count
        pick = lambda keys: table[:, [column[k] for k in keys]]  # noqa: E731
    else:
        dtype = np.dtype([(f"f{i}", t, (c,)) for i, (_, t, c) in enumerate(head.fields)])
        need = dtype.itemsize * head.points
        with open(path, "rb") as f:
            f.seek(head.offset)
            data = f.read(need)
        if len(data) < need:
            raise DataError(f"{path}: truncated: the header announces {head.points:,} points "
                            f"({need:,} bytes of data), the file holds {len(data):,} bytes")
        records = np.frombuffer(data, dtype, count=head.points)
        index = {name: i for i, name in enumerate(names)}
        pick = lambda keys: np.stack([records[f"f{index[k]}"][:, 0] for k in keys], axis=1)  # noqa: E731
    points = pick(("x", "y", "z")).astype(np.float64)
    return points, pick(PCD_NORMALS).astype(np.float64) if has_normals else None


def _load_pcd_compressed(path: Path, has_normals: bool) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        import open3d as o3d
    except ImportError:
        raise DataError(f"{path}: binary_compressed PCD needs open3d (pip install open3d), or save it as "
                        "binary or ascii PCD (pcl_convert_pcd_ascii_binary FILE OUT 1)") from None
    cloud = o3d.io.read_point_cloud(str(path), format="pcd")
    points = np.asarray(cloud.points, np.float64)
    if len(points) == 0:
        raise DataError(f"{path}: open3d read no points from this binary_compressed PCD (damaged?)")
    normals = np.asarray(cloud.normals, np.float64) if has_normals and cloud.has_normals() else None
    return points, normals


def clean_points(path: str | os.PathLike, pts: np.ndarray, normals: np.ndarray | None = None,
                 dim: int = 3) -> tuple[np.ndarray, np.ndarray | None]:
    """Check points (N, dim): drop those with NaN or infinite coordinates (or normals), with a note on
    stderr saying how many; refuse none left, too many, or coordinates beyond :data:`MAX_COORDINATE`."""
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != dim:
        raise DataError(f"{path}: expected (N, {dim}) points, got shape {pts.shape}")
    if len(pts) == 0:
        raise DataError(f"{path}: holds no points")
    if len(pts) > MAX_POINTS:
        raise _too_many(Path(path), len(pts))
    keep = np.isfinite(pts).all(axis=1)
    if normals is not None:
        normals = np.asarray(normals, np.float64)
        keep &= np.isfinite(normals).all(axis=1)
    dropped = int(len(pts) - keep.sum())
    if dropped:
        pts = pts[keep]
        normals = normals[keep] if normals is not None else None
        if len(pts) == 0:
            raise DataError(f"{path}: holds no finite points (all {dropped:,} have NaN or infinite "
                            "coordinates)")
        note(f"{path}: dropped {dropped:,} of {dropped + len(pts):,} points with NaN or infinite "
              "coordinates")
    big = float(np.abs(pts).max())
    if big > MAX_COORDINATE:
        raise DataError(f"{path}: coordinates up to {big:.3g}, beyond the limit {MAX_COORDINATE:.0e}; "
                        "the file is corrupt or in the wrong unit")
    return pts, normals


def load_points(path: str | os.PathLike) -> PointCloud:
    """Read a point cloud and its normals where the file has them.

    Formats: PLY (normals ``nx ny nz``), PCD v0.7 (ascii and binary; binary_compressed through open3d; fields
    ``x y z`` and ``normal_x normal_y normal_z``, others skipped), ``.xyz``/``.txt`` (3 columns, or 6 with
    normals), ``.npy`` (N, 3) or (N, 6), ``.npz`` (see :data:`NPZ_POINTS`), and the vertices of OBJ/OFF/STL.
    See :func:`clean_points` for what is dropped (NaN, inf) and refused (no points, more than
    :data:`MAX_POINTS`, huge coordinates)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    normals = None
    comments: tuple[str, ...] = ()
    if suffix not in POINT_SUFFIXES:
        raise DataError(f"{path}: unsupported point-cloud format '{suffix}'; use one of {POINT_SUFFIXES}")
    _check_count(path, suffix)
    try:
        if suffix == ".npy":
            pts, normals = _split_normals(_load_npy(path))
        elif suffix == ".npz":
            pts, normals = _load_npz_points(path)
        elif suffix == ".pcd":
            pts, normals = _load_pcd(path)
        elif suffix in (".xyz", ".txt"):
            pts = _loadtxt(path)
            if pts.size == 0:
                raise DataError(f"{path}: holds no points")
            if pts.shape[1] >= 6:
                normals = pts[:, 3:6]
            pts = pts[:, :3]
        else:
            import trimesh

            geom = trimesh.load(path, process=False, force=None)
            if isinstance(geom, trimesh.Scene):
                geom = geom.to_geometry() if hasattr(geom, "to_geometry") else geom.dump(concatenate=True)
            pts = np.asarray(geom.vertices)
            if suffix == ".ply":
                comments = _ply_comments(path)
                attrs = getattr(geom, "metadata", {}).get("_ply_raw", {}).get("vertex", {}).get("data")
                if attrs is not None and all(k in attrs.dtype.names for k in ("nx", "ny", "nz")):
                    normals = np.stack([attrs["nx"], attrs["ny"], attrs["nz"]], axis=1)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: out of memory reading it; subsample the point cloud first") from None
    except Exception as e:  # parsers raise anything on malformed files
        raise DataError(f"{path}: cannot read point cloud ({type(e).__name__}: {e})") from None
    if np.asarray(pts).dtype.kind not in "biuf":
        raise DataError(f"{path}: expected numeric points, got dtype {np.asarray(pts).dtype}")
    pts, normals = clean_points(path, pts, normals)
    return PointCloud(pts, normals, comments)


# ---- scenes ------------------------------------------------------------------------------------
SCENE_OBJECT_KEYS = ("file", "category", "id", "transform", "obb")
"""Keys every object of a scene's sidecar has (``bbox`` is added once the scene mesh is built)."""


def save_scene_info(path: str | os.PathLike, info: dict) -> None:
    """Write a scene's sidecar: ``{"id", "split", "frame", "objects": [{file, category, id, transform (4x4,
    source file -> scene frame), obb {center, half_extents, yaw_deg}, bbox [[min], [max]], ...}]}``."""
    write_json(path, info)


def load_scene_info(path: str | os.PathLike) -> dict:
    """Read and check a scene's sidecar (see :func:`save_scene_info`)."""
    info = read_json(path)
    objects = info.get("objects") if isinstance(info, dict) else None
    if not isinstance(objects, list) or not objects:
        raise DataError(f"{path}: expected a JSON object with a non-empty 'objects' list; re-run "
                        "'prep scenes'")
    for i, obj in enumerate(objects):
        missing = [k for k in SCENE_OBJECT_KEYS if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise DataError(f"{path}: object {i} lacks {missing}; re-run 'prep scenes'")
        t = np.asarray(obj["transform"], float)
        if t.shape != (4, 4) or not np.isfinite(t).all():
            raise DataError(f"{path}: object {i} has a transform of shape {t.shape}, expected a finite 4x4 "
                            "matrix")
    return info


# ---- splits and manifests --------------------------------------------------------------------
def write_split(path: str | os.PathLike, ids_by_category: dict[str, list[str]],
                dataset: str = DATASET_NAME) -> None:
    write_json(path, {dataset: {c: sorted(ids) for c, ids in sorted(ids_by_category.items())}})


def read_split(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Read a DeepSDF split file; returns ``(dataset, category, id)`` triples in file order."""
    obj = read_json(path)
    out = []
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {{dataset: {{category: [ids]}}}}")
    for dataset, cats in obj.items():
        if not isinstance(cats, dict):
            raise DataError(f"{path}: expected {{dataset: {{category: [ids]}}}}")
        for cat, ids in cats.items():
            if not isinstance(ids, list):
                raise DataError(f"{path}: category '{cat}' must map to a list of ids")
            out.extend((dataset, cat, str(i)) for i in ids)
    return out


@dataclass(frozen=True)
class ShapeRef:
    """One shape of a data root: where its files are."""

    category: str
    id: str
    sdf: Path
    norm: Path | None
    surface: Path | None

    @property
    def key(self) -> str:
        return f"{self.category}/{self.id}"


class DataRoot:
    """A data root in this toolkit's layout or in DeepSDF's (``SdfSamples/...``)."""

    def __init__(self, root: str | os.PathLike, split_file: str | os.PathLike | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found; create it with 'deepsdf-ad prep'")
        self.deepsdf = (self.root / DEEPSDF_SDF_DIR).is_dir() and not (self.root / SDF_DIR).is_dir()
        self.split_file = Path(split_file) if split_file else None

    def split_path(self, split: str) -> Path:
        if self.split_file is not None and split == "train":
            return self.split_file
        return self.root / SPLITS_DIR / f"{split}.json"

    def shapes(self, split: str = "train") -> list[ShapeRef]:
        path = self.split_path(split)
        if not path.is_file():
            if self.deepsdf:
                raise DataError(f"{path}: no split file; pass DeepSDF's split JSON with --split")
            raise DataError(f"{path}: split file not found; is {self.root} a data folder made by "
                            "'deepsdf-ad prep'?")
        refs = []
        for dataset, cat, sid in read_split(path):
            refs.append(self.shape(cat, sid, dataset))
        if not refs:
            raise DataError(f"{path}: split '{split}' lists no shapes")
        return refs

    def shape(self, category: str, sid: str, dataset: str = DATASET_NAME) -> ShapeRef:
        if self.deepsdf:
            sdf = self.root / DEEPSDF_SDF_DIR / dataset / category / f"{sid}.npz"
            norm = self.root / DEEPSDF_NORM_DIR / dataset / category / f"{sid}.npz"
            surface = self.root / DEEPSDF_SURFACE_DIR / dataset / category / f"{sid}.ply"
        else:
            sdf = self.root / SDF_DIR / category / f"{sid}.npz"
            norm = self.root / NORM_DIR / category / f"{sid}.npz"
            surface = self.root / SURFACE_DIR / category / f"{sid}.ply"
        return ShapeRef(category, sid, sdf, norm if norm.is_file() else None,
                        surface if surface.is_file() else None)

    def scan_paths(self, ref: ShapeRef) -> list[Path]:
        return sorted((self.root / SCANS_DIR / ref.category).glob(f"{ref.id}_*.ply"))

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        return read_json(path) if path.is_file() else {}


def export_deepsdf(root: str | os.PathLike, dest: str | os.PathLike,
                   dataset: str = DATASET_NAME) -> dict[str, Path]:
    """Write a data root of ours in DeepSDF's layout (``SdfSamples/<dataset>/<class>/<id>.npz``,
    ``NormalizationParameters/...``, ``SurfaceSamples/...`` and split JSONs
    ``<dest>/<dataset>_<split>.json``).

    Every file is re-validated on the way and written atomically. Returns the split files written.
    """
    src, dest = DataRoot(root), Path(dest)
    splits = {}
    for split in ("train", "test"):
        if not src.split_path(split).is_file():
            continue
        ids: dict[str, list[str]] = {}
        for ref in src.shapes(split) if read_split(src.split_path(split)) else []:
            pos, neg = load_sdf_samples(ref.sdf)
            save_sdf_samples(dest / DEEPSDF_SDF_DIR / dataset / ref.category / f"{ref.id}.npz", pos, neg)
            if ref.norm is not None:
                offset, scale = load_normalization(ref.norm)
                save_normalization(dest / DEEPSDF_NORM_DIR / dataset / ref.category / f"{ref.id}.npz", offset,
                                   scale)
            if ref.surface is not None:
                cloud = load_points(ref.surface)
                save_points_ply(dest / DEEPSDF_SURFACE_DIR / dataset / ref.category / f"{ref.id}.ply",
                                cloud.points, cloud.normals)
            ids.setdefault(ref.category, []).append(ref.id)
        splits[split] = dest / f"{dataset}_{split}.json"
        write_split(splits[split], ids, dataset)
    return splits


# ---- IDX (MNIST), images, 2D points, meshes --------------------------------------------------
MAX_IDX_BYTES = 1 << 30
"""Largest IDX data read (after gunzip): 1 GiB (all of MNIST's training images take 47 MB)."""
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""IDX type codes (third byte of the magic number) -> big-endian numpy dtypes."""
HEIGHTFIELD_DIR = "heightfield"
"""``DATA/heightfield/<category>/<id>.ply``: digits as closed 3D heightfield solids (``--field height``)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, told apart by the gzip magic bytes).

    Layout: a big-endian magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian int32 sizes, then the
    data in row-major order. A wrong magic, a truncated file or trailing bytes raise :class:`DataError`.
    """
    import zlib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    too_big = (f"{path}: more than {MAX_IDX_BYTES / 2**30:.0f} GiB of IDX data, beyond the limit; split the "
               "file or raise deepsdf_ad.data_prep.formats.MAX_IDX_BYTES")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if not gz and path.stat().st_size > MAX_IDX_BYTES:
        raise DataError(too_big)
    try:
        raw = path.read_bytes()
        if gz:  # decompressed in bounded steps: a small file may inflate to anything (a "gzip bomb")
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = d.decompress(raw, MAX_IDX_BYTES + 1)
            if len(raw) > MAX_IDX_BYTES:
                raise DataError(too_big)
            if not d.eof:
                raise DataError(f"{path}: corrupt gzip data (the stream ends early)")
    except zlib.error as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no magic number)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file (header needs {header} bytes, file has {len(raw)})")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise DataError(f"{path}: corrupt IDX header (negative size in {shape})")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < need:
        raise DataError(f"{path}: truncated IDX file (sizes {shape} need {need} bytes, file has {len(raw)})")
    if len(raw) > need:
        raise DataError(f"{path}: {len(raw) - need} unexpected bytes after the IDX data of shape {shape}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: the path ends in .gz)."""
    import gzip

    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    if array.dtype not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write dtype {array.dtype} with {array.ndim} dims as IDX")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    data = header + np.ascontiguousarray(array, np.dtype(IDX_DTYPES[codes[array.dtype]])).tobytes()
    if compress if compress is not None else str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


MAX_IMAGE_PIXELS = 1024 * 1024
"""Largest image read by :func:`load_png` (the observations of a masked digit grow with 16x its pixels)."""


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 image (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA as PNG."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(tmp, format="PNG")


@contextlib.contextmanager
def _open_image(path: Path, max_pixels: int, advice: str = ""):
    """The PIL image at ``path``, refused before decoding when it has more than ``max_pixels`` (a
    "decompression bomb"; ``advice`` follows the message); PIL's errors inside the block become one-line
    DataErrors."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused below, not printed
            im = Image.open(path)
        with im:
            if im.width * im.height > max_pixels:
                raise DataError(f"{path}: image of {im.width}x{im.height} pixels, more than the limit of "
                                f"{max_pixels:,} pixels{advice}")
            yield im
    except DataError:
        raise
    except Exception as e:  # PIL raises many kinds on malformed files (UnidentifiedImageError, OSError, ...)
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def load_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an image as gray intensity in [0, 1] (H, W) float32 and a known-pixel mask (H, W) bool.

    Pixels with alpha 0 are unknown (masked); an image without alpha is known everywhere.
    """
    path = Path(path)
    with _open_image(path, MAX_IMAGE_PIXELS, "; downscale it (digits need no more than 28x28)") as im:
        im.load()
        alpha = np.asarray(im.getchannel("A")) if "A" in im.getbands() else None
        gray = np.asarray(im.convert("L"), np.float32) / 255.0
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise DataError(f"{path}: image of shape {gray.shape} is too small")
    known = np.ones(gray.shape, bool) if alpha is None else alpha > 0
    return gray, known


MAX_DEPTH_PIXELS = 4096 * 4096
"""Largest depth image read by :func:`load_depth_png` (RGB-D cameras write up to 1920x1080)."""
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")
"""PIL modes of a 16-bit single-channel PNG (older Pillow opens it as 32-bit 'I')."""


def load_depth_png(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit single-channel PNG depth image, as RGB-D cameras (Kinect, RealSense, Azure) and Open3D
    write it, as raw values (H, W) uint16 (0 = no reading; divide by the depth scale for metres).

    An 8-bit or colour image is refused: its values cannot be depths (most often a visualisation of one).
    """
    path = Path(path)
    with _open_image(path, MAX_DEPTH_PIXELS) as im:
        if im.mode not in DEPTH_MODES:
            kind = "an 8-bit" if im.mode in ("1", "L", "P") else "a colour" if len(im.getbands()) > 1 else "a"
            raise DataError(f"{path}: {kind} image (PIL mode {im.mode}), not a 16-bit depth image; --depth "
                            "needs a single-channel 16-bit PNG of raw depths, as RGB-D cameras write them")
        im.load()
        depth = np.asarray(im)
    if depth.ndim != 2 or depth.size == 0 or depth.min() < 0 or depth.max() > np.iinfo(np.uint16).max:
        raise DataError(f"{path}: not a 16-bit depth image (shape {depth.shape}, values "
                        f"{depth.min() if depth.size else '-'}..{depth.max() if depth.size else '-'})")
    return depth.astype(np.uint16)


def save_depth_png(path: str | os.PathLike, depth: np.ndarray) -> None:
    """Write raw depths (H, W) uint16 as a 16-bit PNG (the inverse of :func:`load_depth_png`)."""
    from PIL import Image

    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise ValueError(f"depth must be (H, W) uint16, got {depth.shape} {depth.dtype}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(depth)).save(tmp, format="PNG")


def save_points_2d(path: str | os.PathLike, points: np.ndarray, normals: np.ndarray | None = None) -> None:
    """Write 2D points (N, 2) (e.g. a digit's contour) as a PLY point cloud with z = 0 (normals' z = 0)."""
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {points.shape}")
    pad = np.zeros((len(points), 1), np.float32)
    n3 = None if normals is None else np.concatenate([np.asarray(normals, np.float32), pad], axis=1)
    save_points_ply(path, np.concatenate([points, pad], axis=1), n3)


def load_points_2d(path: str | os.PathLike) -> np.ndarray:
    """Read 2D points (N, 2): ``.npy`` or ``.txt``/``.xyz`` with 2 columns, or any point cloud whose z is 0.
    Points with NaN or infinite coordinates are dropped (counted on stderr), see :func:`clean_points`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".npy", ".txt", ".xyz"):
            _check_count(path, suffix)
            pts = _load_npy(path) if suffix == ".npy" else _loadtxt(path)
        else:
            pts = load_points(path).points
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: out of memory reading it; subsample the points first") from None
    except Exception as e:  # parsers raise anything on malformed files
        raise DataError(f"{path}: cannot read points ({type(e).__name__}: {e})") from None
    if pts.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected numeric points, got dtype {pts.dtype}")
    pts = np.asarray(pts, np.float64)
    if pts.size == 0:
        raise DataError(f"{path}: holds no points")
    if pts.ndim == 2 and pts.shape[1] == 3:
        z = pts[:, 2]
        if np.abs(z[np.isfinite(z)]).max(initial=0.0) > 1e-6:
            raise DataError(f"{path}: 3D points with z != 0; a 2D run needs (N, 2) points")
        pts = pts[:, :2]
    pts, _ = clean_points(path, pts, dim=2)
    return pts


def save_mesh(path: str | os.PathLike, mesh) -> None:
    """Write a trimesh mesh; the format follows the suffix (.ply, .obj, .off, .stl)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lstrip(".").lower() or "ply")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically (read it back with ``np.load(path, allow_pickle=False)``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """One array of a ``.npy``, never unpickled (object arrays are refused by name)."""
    return _load_npy(Path(path))


def load_geometry(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """The vertices (N, 3) float64 and triangles (F, 3) (None for a point cloud) of a mesh or point-cloud file
    that trimesh reads (.ply .obj .off .stl; a file holding a scene: its geometries concatenated).

    Raises :class:`DataError` for a file trimesh cannot parse or one with no points."""
    import trimesh

    path = Path(path)
    try:
        geom = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many types for bad files
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if isinstance(geom, trimesh.Scene):
        if not geom.geometry:
            raise DataError(f"{path}: holds no points or triangles")
        geom = geom.dump(concatenate=True)
    vertices = np.asarray(getattr(geom, "vertices", np.zeros((0, 3))), np.float64)
    if len(vertices) == 0:
        raise DataError(f"{path}: holds no points or triangles")
    return vertices, getattr(geom, "faces", None)
