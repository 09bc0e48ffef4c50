"""MNIST digits as 2D signed-distance fields and heightfields (``deepsdf-ad prep digits``).

Frame: an image of H x W pixels covers [-1, 1]^2 with x to the right and y up; pixel (row r, column c) has
its centre at ``x = -1 + (2c + 1) / W``, ``y = 1 - (2r + 1) / H``. Intensities (0..255 -> 0..1) are
bilinearly interpolated between pixel centres (0 outside the image), so fields are continuous in (x, y).

- ``sdf`` field: the digit is the region where the interpolated intensity is >= 0.5. Its signed distance
  (negative inside) comes from an exact Euclidean distance transform on a grid ``upsample`` times finer
  than the image (half a fine pixel is the largest error), interpolated bilinearly at the sample points.
- ``height`` field: the target is the interpolated intensity itself (in [0, 1]); it is stored in the
  sdf column of the sample files, and the run must train with ``train.loss: l1``.

Data root layout is the one of meshes (:mod:`deepsdf_ad.data_prep.formats`): category = the digit's label,
id = ``<IDX file prefix>-<index in the file, 5 digits>`` (e.g. ``t10k-00042``), ``norm`` is the identity
(offset (0, 0), scale 1), ``surface`` holds contour points (z = 0). With ``--field height`` every digit
is also written as a closed heightfield solid to ``DATA/heightfield/<label>/<id>.ply``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage
from tqdm import tqdm

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.folders import writes_data_root
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.jobs import shape_rng
from deepsdf_ad.data_prep.params import DigitSamplingConfig  # noqa: F401 (re-exported)
from deepsdf_ad.data_prep.runner import Item, JobKind, Outcome, run_prep

TOOL_VERSION = "0.1.0"
FIELDS = ("sdf", "height")
MAX_SIDE = 256
"""Largest image side of a digit set (MNIST: 28); the distance transform's grid is ``upsample`` times
finer."""
THRESHOLD = 0.5
"""Intensity (0..1) at and above which a point is inside the digit."""

MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
"""The standard MNIST files and their MD5 checksums (those of the original distribution)."""
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_URL_ENV = "DEEPSDF_AD_MNIST_URL"
"""Environment variable: a base URL tried instead of the public mirrors (e.g. a local copy)."""


@dataclass
class DigitSet:
    """Images (N, H, W) uint8 and labels (N,) of one IDX file pair, e.g. prefix 't10k'."""

    prefix: str
    images: np.ndarray
    labels: np.ndarray
    files: tuple[Path, Path]


def find_idx_pairs(idx_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(prefix, images file, labels file)`` for every ``<prefix>-images-idx3-ubyte[.gz]`` in ``idx_dir``."""
    idx_dir = Path(idx_dir)
    if not idx_dir.is_dir():
        raise DataError(f"{idx_dir}: folder not found (use --download to fetch MNIST into it)")
    pairs = []
    for img in sorted(idx_dir.iterdir()):
        m = re.fullmatch(r"(.+)-images-idx3-ubyte(\.gz)?", img.name)
        if not m:
            continue
        prefix = m.group(1)
        labels = [idx_dir / f"{prefix}-labels-idx1-ubyte{s}" for s in (".gz", "")]
        found = [p for p in labels if p.is_file()]
        if not found:
            raise DataError(f"{img}: no matching labels file {labels[0].name} (or {labels[1].name})")
        if any(p[0] == prefix for p in pairs):
            raise DataError(f"{img}: prefix '{prefix}' appears twice (both .gz and raw?); keep one")
        pairs.append((prefix, img, found[0]))
    if not pairs:
        raise DataError(f"{idx_dir}: no '*-images-idx3-ubyte[.gz]' files (use --download to fetch MNIST)")
    return pairs


def load_digit_set(prefix: str, images_path: str | os.PathLike, labels_path: str | os.PathLike) -> DigitSet:
    """Read and check one images/labels pair (uint8 images (N, H, W), labels (N,) in 0..9)."""
    images = formats.read_idx(images_path)
    labels = formats.read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if not (2 <= images.shape[1] <= MAX_SIDE and 2 <= images.shape[2] <= MAX_SIDE):
        raise DataError(f"{images_path}: images of {images.shape[1]}x{images.shape[2]} pixels; each side "
                        f"must be 2 to {MAX_SIDE} pixels (the distance transform runs on a grid 8 times "
                        "finer)")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    return DigitSet(prefix, images, labels, (Path(images_path), Path(labels_path)))


def parse_labels(text: str | None) -> set[int]:
    """'0-4' / '1,3,7' / '0-2,9' -> a set of digits; None -> all ten."""
    if text is None:
        return set(range(10))
    out: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d)\s*(?:-\s*(\d)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise DataError(f"--labels {text}: use digits and ranges such as 0-4 or 1,3,7")
        lo = int(m.group(1))
        out.update(range(lo, int(m.group(2) if m.group(2) is not None else lo) + 1))
    return out


def digit_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


def download_mnist(idx_dir: str | os.PathLike, base_urls: tuple[str, ...] | None = None,
                   files: dict[str, str] | None = None, timeout: float = 30.0,
                   progress: bool = True) -> list[Path]:
    """Fetch the MNIST files into ``idx_dir`` and check their MD5; files already there and intact are kept.

    Args:
        base_urls: mirrors tried in order (default: ``$DEEPSDF_AD_MNIST_URL`` if set, else the public ones).
        files: file name -> MD5 (default: the four standard files).
    Returns the paths of the files.
    """
    idx_dir = Path(idx_dir)
    files = MNIST_FILES if files is None else files
    if base_urls is None:
        env = os.environ.get(MNIST_URL_ENV)
        base_urls = (env,) if env else MNIST_MIRRORS
    out = []
    for name, md5 in tqdm(files.items(), desc="download MNIST", unit="file", disable=not progress):
        path = idx_dir / name
        out.append(path)
        if path.is_file() and formats.file_digest(path, "md5") == md5:
            continue
        errors = []
        for base in base_urls:
            url = base.rstrip("/") + "/" + name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - http(s) mirrors only
                    data = r.read()
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            got = hashlib.md5(data).hexdigest()
            if got != md5:
                errors.append(f"{url}: checksum mismatch (MD5 {got}, expected {md5})")
                continue
            with formats.atomic_path(path) as tmp:
                tmp.write_bytes(data)
            break
        else:
            raise DataError(f"{path}: download failed ({'; '.join(errors)})")
    return out


# ---- fields ----------------------------------------------------------------------------------------
def pixel_coords(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Frame points (M, 2) -> fractional (row, col) pixel indices (2, M) of an image of ``shape``."""
    h, w = shape
    col = (points[:, 0] + 1.0) * (w / 2.0) - 0.5
    row = (1.0 - points[:, 1]) * (h / 2.0) - 0.5
    return np.stack([row, col])


def pixel_centres(h: int, w: int) -> np.ndarray:
    """Frame coordinates (H, W, 2) of the pixel centres of an H x W image."""
    xs = -1.0 + (2.0 * np.arange(w) + 1.0) / w
    ys = 1.0 - (2.0 * np.arange(h) + 1.0) / h
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1)


def intensity_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear intensity (M,) of a [0, 1] image (H, W) at frame points (M, 2); 0 outside the image."""
    return ndimage.map_coordinates(np.asarray(image, np.float64), pixel_coords(points, image.shape), order=1,
                                   mode="constant", cval=0.0)


def as_unit(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float 0..1; float images are taken as already in [0, 1]."""
    image = np.asarray(image)
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


class DigitField:
    """The fields of one image: signed distance to its 0.5 contour, and intensity.

    Args:
        image: (H, W) intensities, uint8 0..255 or float 0..1.
        upsample: the distance transform grid has ``upsample * H`` x ``upsample * W`` cells over [-1, 1]^2.
    """

    def __init__(self, image: np.ndarray, upsample: int = 8):
        self.image = as_unit(image)
        h, w = self.image.shape
        self.fine_shape = (h * upsample, w * upsample)
        fine = pixel_centres(*self.fine_shape).reshape(-1, 2)
        self.fine_intensity = intensity_at(self.image, fine).reshape(self.fine_shape)
        inside = self.fine_intensity >= THRESHOLD
        if not inside.any():
            raise DataError(f"no pixel reaches intensity {THRESHOLD}; the digit is empty")
        if inside.all():
            raise DataError("every pixel is inside; the image has no contour")
        # distances between fine pixel centres, in frame units per axis; the contour lies half a cell
        # beyond the last pixel of a side
        sampling = (2.0 / self.fine_shape[0], 2.0 / self.fine_shape[1])
        d_out = ndimage.distance_transform_edt(~inside, sampling=sampling)
        d_in = ndimage.distance_transform_edt(inside, sampling=sampling)
        half = 0.5 * min(sampling)
        self.fine_sdf = np.where(inside, -(d_in - half), d_out - half)
        self._segments: np.ndarray | None = None

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (M,) at frame points (M, 2), negative inside."""
        return ndimage.map_coordinates(self.fine_sdf, pixel_coords(points, self.fine_shape), order=1,
                                       mode="nearest")

    def intensity(self, points: np.ndarray) -> np.ndarray:
        """Bilinear intensity (M,) in [0, 1] at frame points (M, 2)."""
        return intensity_at(self.image, points)

    def values(self, points: np.ndarray, field: str) -> np.ndarray:
        return self.sdf(points) if field == "sdf" else self.intensity(points)

    def contours(self) -> list[np.ndarray]:
        """The 0.5 contours of the interpolated intensity, as (K, 2) frame polylines."""
        from skimage import measure

        h, w = self.fine_shape
        out = []
        for c in measure.find_contours(self.fine_intensity, THRESHOLD):
            out.append(np.stack([-1.0 + (2.0 * c[:, 1] + 1.0) / w, 1.0 - (2.0 * c[:, 0] + 1.0) / h], axis=1))
        return out

    def contour_samples(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform by arc length on the contour (n, 2) and the outward normals there (n, 2)."""
        if self._segments is None:
            segs = [np.stack([c[:-1], c[1:]], axis=1) for c in self.contours() if len(c) > 1]
            self._segments = np.concatenate(segs) if segs else np.zeros((0, 2, 2))
        segs = self._segments
        length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
        if len(segs) == 0 or length.sum() <= 0:
            raise DataError("the digit has no contour of positive length")
        k = rng.choice(len(segs), size=n, p=length / length.sum())
        t = rng.random(n)[:, None]
        pts = segs[k, 0] * (1 - t) + segs[k, 1] * t
        return pts, self.normals(pts)

    def normals(self, points: np.ndarray) -> np.ndarray:
        """Outward unit normals at frame points (M, 2) near the contour: minus the intensity gradient
        (smooth there), or the sdf gradient over a few fine cells where the intensity is flat."""
        eps = 2.0 / self.fine_shape[0]

        def grad(fn, e):
            return np.stack([fn(points + [e, 0.0]) - fn(points - [e, 0.0]),
                             fn(points + [0.0, e]) - fn(points - [0.0, e])], axis=1)

        g = -grad(self.intensity, eps)
        flat = np.linalg.norm(g, axis=1) < 1e-9
        if flat.any():
            g[flat] = grad(self.sdf, 8 * eps)[flat]
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def sample_digit(field: DigitField, cfg: DigitSamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """Samples (N, 3) rows x, y, target: near the contour (two noise levels) plus uniform in [-1, 1]^2."""
    n = cfg.samples
    n_uni = int(round(n * cfg.uniform_fraction))
    n_near = n - n_uni
    base, _ = field.contour_samples(n_near, rng)
    std = np.where(np.arange(n_near) % 2 == 0, cfg.stds[0], cfg.stds[1])[:, None]
    near = base + rng.normal(size=base.shape) * std
    pts = np.clip(np.concatenate([near, rng.uniform(-1.0, 1.0, size=(n_uni, 2))]), -1.0, 1.0)
    return np.concatenate([pts, field.values(pts, cfg.field)[:, None]], axis=1).astype(np.float32)


def split_samples(samples: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
    """DeepSDF's pos/neg split. sdf: pos = outside (> 0). height: pos = ink (> 0), neg = background (0)."""
    pos = samples[:, -1] > 0
    return samples[pos], samples[~pos]


def heightfield_solid(image: np.ndarray, base: float = 0.05, height: float = 0.3) -> trimesh.Trimesh:
    """A closed, outward-oriented solid over [-1, 1]^2: bottom z = 0, top z = base + height * intensity.

    The top is a grid through the pixel centres and the frame's border (intensity interpolated
    bilinearly); the walls join its border ring to the bottom, which is a fan around (0, 0, 0).
    """
    img = as_unit(image)
    h, w = img.shape
    xs = np.concatenate([[-1.0], -1.0 + (2.0 * np.arange(w) + 1.0) / w, [1.0]])
    ys = np.concatenate([[-1.0], -1.0 + (2.0 * np.arange(h) + 1.0) / h, [1.0]])  # ascending y
    nx, ny = len(xs), len(ys)
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx): row i is y = ys[i]
    xy = np.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    top = np.concatenate([xy, (base + height * intensity_at(img, xy))[:, None]], axis=1)

    def v(i, j):
        return i * nx + j

    i, j = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    a, b, c, d = v(i, j), v(i, j + 1), v(i + 1, j + 1), v(i + 1, j)
    faces = [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    # border ring, counter-clockwise seen from +z
    ring = ([v(0, jj) for jj in range(nx)] + [v(ii, nx - 1) for ii in range(1, ny)]
            + [v(ny - 1, jj) for jj in range(nx - 2, -1, -1)] + [v(ii, 0) for ii in range(ny - 2, 0, -1)])
    ring = np.asarray(ring)
    nt = len(top)
    bottom = np.concatenate([top[ring, :2], np.zeros((len(ring), 1))], axis=1)
    centre = nt + len(ring)
    tk, tk1 = ring, np.roll(ring, -1)
    bk = nt + np.arange(len(ring))
    bk1 = np.roll(bk, -1)
    faces += [np.stack([tk, bk, bk1], 1), np.stack([tk, bk1, tk1], 1),
              np.stack([np.full(len(ring), centre), bk1, bk], 1)]
    verts = np.concatenate([top, bottom, [[0.0, 0.0, 0.0]]])
    return trimesh.Trimesh(verts, np.concatenate(faces), process=False)


# ---- image observations (reconstruction from a partly masked digit) --------------------------------
def image_observations(gray: np.ndarray, known: np.ndarray, field: str, upsample: int = 4
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a partly masked image says about the field: points (M, 2) with bounds lo <= value <= hi.

    ``gray`` (H, W) in [0, 1]; ``known`` (H, W) bool, False where masked. For ``height`` the known
    pixels give exact intensities. For ``sdf`` every fine grid point in the known region gets its sign,
    and its distance to the nearest known pixel of the other side bounds |sdf| from above; it is exact
    when that is no farther than the masked region (the unseen part cannot hold a nearer contour).
    Contour points seen in the known region have sdf = 0.
    """
    gray = as_unit(gray)
    if known.shape != gray.shape:
        raise DataError(f"mask of shape {known.shape} does not match the image {gray.shape}")
    if not known.any():
        raise DataError("the image is masked everywhere; nothing is known")
    h, w = gray.shape
    if field == "height":
        pts = pixel_centres(h, w)[known]
        vals = gray[known]
        return pts, vals, vals
    fine_shape = (h * upsample, w * upsample)
    fine = pixel_centres(*fine_shape).reshape(-1, 2)
    rc = pixel_coords(fine, (h, w))
    known_f = ndimage.map_coordinates(known.astype(np.float64), rc, order=0,
                                      mode="nearest").reshape(fine_shape) > 0.5
    inside = intensity_at(gray, fine).reshape(fine_shape) >= THRESHOLD
    sampling = (2.0 / fine_shape[0], 2.0 / fine_shape[1])
    half = 0.5 * min(sampling)
    big = 4.0  # larger than any distance in the frame

    def dist_to(mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return np.full(mask.shape, big)
        return ndimage.distance_transform_edt(~mask, sampling=sampling) - half

    d_opp = np.where(inside, dist_to(known_f & ~inside), dist_to(known_f & inside))
    d_unknown = dist_to(~known_f)
    near = np.minimum(d_opp, np.maximum(d_unknown, 0.0))
    sel = known_f.reshape(-1)
    ins = inside.reshape(-1)[sel]
    far, close = d_opp.reshape(-1)[sel], near.reshape(-1)[sel]
    lo = np.where(ins, -far, close)
    hi = np.where(ins, -close, far)
    pts = fine[sel]
    # contour points whose surroundings are known
    cpts = []
    try:
        cpts = [p for p in DigitField(gray, upsample).contours()]
    except DataError:
        pass
    if cpts:
        c = np.concatenate(cpts)
        c = c[ndimage.map_coordinates(known_f.astype(np.float64), pixel_coords(c, fine_shape), order=0,
                                      mode="nearest") > 0.5]
        pts = np.concatenate([pts, c])
        lo = np.concatenate([lo, np.zeros(len(c))])
        hi = np.concatenate([hi, np.zeros(len(c))])
    return pts, lo, hi


# ---- prep ------------------------------------------------------------------------------------------
def prep_one_digit(image: np.ndarray, category: str, sid: str, out: Path, cfg: DigitSamplingConfig,
                   rng: np.random.Generator) -> dict:
    """Sample one digit into the data root ``out``; returns its record (status ok or failed)."""
    rec: dict = {"category": category, "id": sid}
    try:
        field = DigitField(image, cfg.upsample)
        samples = sample_digit(field, cfg, rng)
        pos, neg = split_samples(samples, cfg.field)
        contour, normals = field.contour_samples(cfg.contour_points, rng)
        formats.save_sdf_samples(out / formats.SDF_DIR / category / f"{sid}.npz", pos, neg)
        formats.save_normalization(out / formats.NORM_DIR / category / f"{sid}.npz", np.zeros(2), 1.0)
        formats.save_points_2d(out / formats.SURFACE_DIR / category / f"{sid}.ply", contour, normals)
        if cfg.field == "height":
            formats.save_mesh(out / formats.HEIGHTFIELD_DIR / category / f"{sid}.ply",
                              heightfield_solid(image))
        rec.update(status="ok", pos=int(len(pos)), neg=int(len(neg)))
    except DataError as e:
        rec.update(status="failed", reason=f"{sid}: {e}")
    return rec


def _digit_job(image: np.ndarray, category: str, sid: str, out: Path, cfg: DigitSamplingConfig,
               seed: int) -> dict:
    """:func:`prep_one_digit` with the digit's own generator, seeded by (seed, its key)."""
    return prep_one_digit(image, category, sid, out, cfg, shape_rng(seed, f"{category}/{sid}"))


def _outputs_exist(out: Path, category: str, sid: str, field: str) -> bool:
    dirs = [(formats.SDF_DIR, ".npz"), (formats.NORM_DIR, ".npz"), (formats.SURFACE_DIR, ".ply")]
    if field == "height":
        dirs.append((formats.HEIGHTFIELD_DIR, ".ply"))
    return all((out / d / category / f"{sid}{ext}").is_file() for d, ext in dirs)


HEADER_KEYS = ("tool", "version", "kind", "field", "target", "source", "params", "files")
"""The fields a digits manifest starts with (a merge takes them from the first shard)."""


class DigitJobs(JobKind):
    """``prep digits`` for the runner: one item per selected digit, :func:`prep_one_digit`. A re-run with the
    same parameters skips digits whose files exist, if the previous run with those parameters finished (the
    ``finished`` reuse); ``manifest.json`` lists only the failed digits, and a summary by label."""

    name = "digits"
    records_key = "digits"
    unit = "digit"
    task = staticmethod(_digit_job)
    temp_dirs = (formats.HEIGHTFIELD_DIR,)
    flush = False
    reuse = "finished"
    timed = True

    def __init__(self, field: str | None):
        self.field = field

    def reusable(self, out: Path, item: Item, old: dict) -> bool:
        return _outputs_exist(out, *item.key, self.field)

    @classmethod
    def from_shard(cls, manifest: dict) -> tuple[DigitJobs, dict]:
        return cls(manifest.get("field")), {k: manifest[k] for k in HEADER_KEYS if k in manifest}

    def finish(self, out: Path, manifest: dict, done: Outcome, progress: bool) -> dict:
        ok = [r for r in done.records if r["status"] == "ok"]
        failed = [r for r in done.records if r["status"] != "ok"]
        by_label = {str(c): sum(1 for r in ok if r["category"] == str(c))
                    for c in sorted(manifest["params"]["labels"])}
        summary = {"digits": len(done.records), "ok": len(ok), "failed": len(failed),
                   "skipped_unchanged": done.skipped, "by_label": by_label,
                   "train": sum(len(v) for v in done.train.values()),
                   "test": sum(len(v) for v in done.test.values()),
                   "seconds": round(done.seconds, 2)}
        return {**manifest, "complete": True, "failed": failed, "summary": summary}


def digit_items(sets: list[DigitSet], labels: set[int], limit: int | None, out: Path,
                cfg: DigitSamplingConfig, seed: int) -> tuple[list[Item], list[dict]]:
    """The items of the digits with ``labels`` (at most ``limit`` per set, in file order), and the manifest's
    record of every IDX pair."""
    items, files = [], []
    for ds in sets:
        keep = np.flatnonzero(np.isin(ds.labels, sorted(labels)))
        if limit is not None:
            keep = keep[:limit]
        for i in keep:
            key = (str(int(ds.labels[i])), digit_id(ds.prefix, int(i)))
            head = {"category": key[0], "id": key[1]}
            items.append(Item(key, (ds.images[i], *key, out, cfg, seed), head, key[1]))
        files.append({"images": str(ds.files[0]), "labels": str(ds.files[1]), "status": "ok",
                      "sha256": formats.file_sha256(ds.files[0]),
                      "labels_sha256": formats.file_sha256(ds.files[1]),
                      "digits": int(len(ds.labels)), "selected": int(len(keep))})
    return items, files


@writes_data_root("deepsdf-ad prep digits")
def prep_digits(idx_dir: str | os.PathLike, out: str | os.PathLike, cfg: DigitSamplingConfig,
                labels: set[int] | None = None, limit: int | None = None, test_fraction: float = 0.2,
                seed: int = 0, progress: bool = True, shard: tuple[int, int] | None = None) -> dict:
    """Sample the digits of every IDX pair in ``idx_dir`` into the data root ``out``; returns the manifest.

    Args:
        labels: digits to keep (default all); the others are left out (prep them separately as
            out-of-distribution data).
        limit: at most this many digits per IDX pair (the first ones, in file order, after the label filter).
        shard: ``(I, N)``: sample only shard I's digits (round-robin over the sorted (label, id) keys, see
            :func:`deepsdf_ad.data_prep.jobs.shard_owner`) and write ``DATA/shards/shard-I-of-N.json`` instead
            of the splits and ``manifest.json`` (``prep merge`` writes those).
    Each digit has its own generator seeded by (seed, its key), so results do not depend on order or sharding.
    A re-run with the same parameters skips digits whose files exist, if the previous run with those
    parameters finished; a run with other parameters first marks the manifest incomplete, so files of
    mixed parameters are never taken as done.
    """
    if cfg.field not in FIELDS:
        raise DataError(f"--field {cfg.field}: unknown field; use one of {', '.join(FIELDS)}")
    if cfg.samples < 2:
        raise DataError(f"--samples {cfg.samples}: need at least 2 samples per digit")
    labels = set(range(10)) if labels is None else labels
    out = Path(out)
    sets = [load_digit_set(*p) for p in find_idx_pairs(idx_dir)]
    params = {"kind": "digits", "field": cfg.field, "sampling": asdict(cfg), "labels": sorted(labels),
              "limit": limit, "seed": seed, "test_fraction": test_fraction}
    params = json.loads(json.dumps(params))  # as the manifest stores it (tuples become lists)
    items, files = digit_items(sets, labels, limit, out, cfg, seed)
    if not items:
        raise DataError(f"{idx_dir}: no digit with labels {sorted(labels)}")
    header = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "kind": "digits", "field": cfg.field,
              "target": "signed distance to the 0.5 contour, negative inside" if cfg.field == "sdf"
              else "bilinear intensity in [0, 1] (stored in the sdf column)",
              "source": str(idx_dir), "params": params, "files": files}
    return run_prep(DigitJobs(cfg.field), out, header, items, progress=progress, shard=shard)
