"""The run folder: config, checkpoints, codes, metrics. Names are constants here and nowhere else.

::

    RUN/config.yaml                      the full resolved config
    RUN/shapes.json                      {"data": DATA, "keys": ["category/id", ...]} (code-table order)
    RUN/metrics.jsonl                    one JSON line per epoch: epoch, loss, seconds, learning rates, ...
    RUN/tensorboard/                     TensorBoard event files of the same (train.tensorboard: true)
    RUN/checkpoints/epoch_000100.safetensors   model + optimiser state (safetensors: no pickle)
    RUN/checkpoints/epoch_000100.json    its sidecar: {"file", "epoch", "sha256"}
    RUN/latent_codes.safetensors         the learned codes ("codes": (S, L)), shape keys in its metadata
    RUN/meshes/                          meshes written by ``deepsdf-ad mesh``
    RUN/.deepsdf-ad                      marker: made by ``deepsdf-ad train`` (see ``data_prep/folders.py``)
    RUN/.deepsdf-ad.lock                 advisory lock of the ``train`` writing it (pid, host)

Checkpoints are written to a temp file, flushed (fsync) and renamed, then their sidecar with the SHA-256;
a checkpoint whose checksum does not match (or that has no sidecar) is skipped, with a one-line warning, in
favour of the previous one. Runs written before sidecars existed keep ``checkpoints/index.json``, which is
still read.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from deepsdf_ad.config import Config, ConfigError, load_config, save_config
from deepsdf_ad.data_prep import log
from deepsdf_ad.data_prep.formats import (
    TEMP_PREFIX,
    DataError,
    atomic_path,
    file_sha256,
    is_temp_file,
    read_json,
    write_json,
    write_text_atomic,
)
from deepsdf_ad.models import SDFModel, build_model

CONFIG = "config.yaml"
SHAPES = "shapes.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_INDEX = "index.json"
CODES = "latent_codes.safetensors"
TENSORBOARD = "tensorboard"
MESHES = "meshes"


class Run:
    """A run folder (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ---- config and shapes ----
    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def require(self) -> Run:
        if not self.path.is_dir():
            raise DataError(f"{self.path}: run folder not found; create it with 'deepsdf-ad train'")
        if not self.exists():
            raise DataError(f"{self.path}: not a run folder (no {CONFIG}); create it with 'deepsdf-ad train'")
        if not self.checkpoints():
            raise DataError(f"{self.path}: run has no checkpoint yet; train it first")
        return self

    def config(self) -> Config:
        try:
            return load_config(self.path / CONFIG)
        except ConfigError as e:
            raise DataError(f"{self.path / CONFIG}: {e}") from None

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.path / CONFIG)

    def shapes(self) -> dict:
        return read_json(self.path / SHAPES)

    def save_shapes(self, data_root: str, keys: list[str], extra: dict | None = None) -> None:
        write_json(self.path / SHAPES, {"data": data_root, "keys": keys, **(extra or {})})

    def shape_index(self, shape: str) -> int:
        """Row of a training shape, given as 'category/id' or an unambiguous 'id'."""
        keys = self.shapes()["keys"]
        if shape in keys:
            return keys.index(shape)
        hits = [i for i, k in enumerate(keys) if k.split("/", 1)[-1] == shape]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DataError(f"{self.path}: shape id '{shape}' is ambiguous; use category/id")
        sample = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise DataError(f"{self.path}: no training shape '{shape}'; known: {sample}")

    # ---- metrics ----
    def append_metrics(self, row: dict) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return rows

    def truncate_metrics(self, epoch: int) -> None:
        """Drop metric rows after ``epoch`` (work lost to an interruption is redone on resume)."""
        rows = [r for r in self.metrics() if r.get("epoch", 0) <= epoch]
        write_text_atomic(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    # ---- checkpoints ----
    def checkpoints(self) -> list[dict]:
        """The checkpoints on record, oldest first: ``{"file", "epoch", "sha256"}`` from each sidecar
        (runs written before sidecars existed: from ``index.json``)."""
        folder = self.path / CHECKPOINTS
        if not folder.is_dir():
            return []
        entries = {}
        legacy = folder / CHECKPOINT_INDEX
        if legacy.is_file():
            with contextlib.suppress(DataError, AttributeError, TypeError):
                entries = {c["file"]: c for c in read_json(legacy).get("checkpoints", [])}
        for side in folder.glob("epoch_*.json"):
            try:
                entry = read_json(side)
                entries[entry["file"]] = {"file": str(entry["file"]), "epoch": int(entry["epoch"]),
                                          "sha256": str(entry["sha256"])}
            except (DataError, KeyError, TypeError, ValueError):
                continue  # a sidecar cut by a kill: its checkpoint cannot be verified, so it does not count
        return sorted(entries.values(), key=lambda c: c["epoch"])

    def save_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor], meta: dict,
                        keep: int = 3) -> Path:
        """Write ``epoch_NNNNNN.safetensors`` (temp file, fsync, rename), then its sidecar
        ``epoch_NNNNNN.json`` with the SHA-256; drop checkpoints beyond the newest ``keep`` (0: keep all)
        and any newer than ``epoch`` (left from a future abandoned on resume)."""
        folder = self.path / CHECKPOINTS
        name = f"epoch_{epoch:06d}.safetensors"
        path = folder / name
        with atomic_path(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                      metadata={"meta": json.dumps(meta)})
            _fsync(tmp)
        _fsync(folder)
        entry = {"file": name, "epoch": epoch, "sha256": file_sha256(path)}
        with atomic_path(_sidecar(path)) as tmp:
            tmp.write_text(json.dumps(entry) + "\n")
            _fsync(tmp)
        _fsync(folder)
        entries = self.checkpoints()
        for c in entries:  # a run from before sidecars: give its checkpoints one before the index goes
            if not _sidecar(folder / c["file"]).is_file():
                write_text_atomic(_sidecar(folder / c["file"]), json.dumps(c) + "\n")
        (folder / CHECKPOINT_INDEX).unlink(missing_ok=True)
        stale = [c for c in entries if c["epoch"] > epoch]
        kept = [c for c in entries if c["epoch"] <= epoch]
        if keep > 0:
            stale += kept[:-keep]
            kept = kept[-keep:]
        for c in stale:
            _sidecar(folder / c["file"]).unlink(missing_ok=True)
            (folder / c["file"]).unlink(missing_ok=True)
        # leftovers of kills: temp files, and checkpoints whose sidecar was never written
        known = {c["file"] for c in kept}
        for f in [*folder.glob(f"{TEMP_PREFIX}*"), *folder.glob("epoch_*.safetensors")]:
            if f.name not in known and (is_temp_file(f) or f.suffix == ".safetensors"):
                f.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, warn: bool = True) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Newest checkpoint whose checksum matches, or None. Corrupt ones are skipped with a one-line
        warning each (``warn=False``: silently)."""
        def warning(text: str) -> None:
            if warn:
                log.warn(text)

        entries = self.checkpoints()
        newest = entries[-1]["epoch"] if entries else -1
        for f in sorted((self.path / CHECKPOINTS).glob("epoch_*.safetensors")):
            if f.name not in {c["file"] for c in entries} and _epoch_of(f) > newest:
                warning(f"{f}: checkpoint has no readable checksum sidecar (interrupted while saving?); "
                        f"{'using the previous one' if entries else 'no older checkpoint to use'}")
        for i, entry in enumerate(reversed(entries)):
            path = self.path / CHECKPOINTS / entry["file"]
            fallback = "using the previous one" if i + 1 < len(entries) else "no older checkpoint to use"
            if not path.is_file():
                warning(f"{path}: checkpoint missing; {fallback}")
                continue
            if file_sha256(path) != entry.get("sha256"):
                warning(f"{path}: checkpoint corrupt or truncated (checksum mismatch); {fallback}")
                continue
            try:
                tensors = load_file(str(path))
                with safe_open(str(path), "pt") as f:
                    meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            except (SafetensorError, OSError, json.JSONDecodeError) as e:
                warning(f"{path}: unreadable checkpoint ({e}); {fallback}")
                continue
            return tensors, meta
        return None

    def save_codes(self, codes: torch.Tensor, keys: list[str]) -> None:
        with atomic_path(self.path / CODES) as tmp:
            save_file({"codes": codes.detach().contiguous().cpu()}, str(tmp),
                      metadata={"keys": json.dumps(keys)})

    def codes(self) -> torch.Tensor:
        path = self.path / CODES
        if not path.is_file():
            raise DataError(f"{path}: no latent codes in this run")
        try:
            return load_file(str(path))["codes"]
        except (SafetensorError, OSError, KeyError) as e:
            raise DataError(f"{path}: unreadable codes file ({e})") from None


def _epoch_of(checkpoint: Path) -> int:
    try:
        return int(checkpoint.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _sidecar(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename survives a crash of the machine."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_model_state(model: SDFModel, tensors: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})


def load_trained(run: Run, device: torch.device) -> tuple[Config, SDFModel]:
    """The run's config and its newest model, in eval mode on ``device``."""
    run.require()
    cfg = run.config()
    keys = run.shapes()["keys"]
    model = build_model(cfg.dim, cfg.model.decoder, cfg.model.latent, len(keys))
    ck = run.load_checkpoint()
    if ck is None:
        raise DataError(f"{run.path}: no readable checkpoint")
    load_model_state(model, ck[0])
    model.to(device).eval()
    return cfg, model
