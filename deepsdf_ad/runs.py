"""The run folder: config, checkpoints, codes, metrics. Names are constants here and nowhere else.

::

    RUN/config.yaml                      the full resolved config
    RUN/shapes.json                      {"data": DATA, "keys": ["category/id", ...]} (row order of the code table)
    RUN/metrics.jsonl                    one JSON line per epoch: epoch, loss, seconds, learning rates, ...
    RUN/checkpoints/epoch_000100.safetensors   model + optimiser state (safetensors: no pickle)
    RUN/checkpoints/index.json           checkpoints with epoch and SHA-256, newest last
    RUN/latent_codes.safetensors         the learned codes ("codes": (S, L)), shape keys in its metadata
    RUN/meshes/                          meshes written by ``deepsdf-ad mesh``

Checkpoints are written to a temp file and renamed; a checkpoint whose checksum does not match is skipped
(with a warning) in favour of the previous one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_prep.formats import DataError, atomic_path, file_sha256, read_json, write_json, write_text_atomic
from deepsdf_ad.config import Config, ConfigError, load_config, save_config

CONFIG = "config.yaml"
SHAPES = "shapes.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_INDEX = "index.json"
CODES = "latent_codes.safetensors"
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
        path = self.path / CHECKPOINTS / CHECKPOINT_INDEX
        if not path.is_file():
            return []
        try:
            return list(read_json(path).get("checkpoints", []))
        except DataError:
            return []

    def save_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int = 3) -> Path:
        folder = self.path / CHECKPOINTS
        name = f"epoch_{epoch:06d}.safetensors"
        path = folder / name
        with atomic_path(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                      metadata={"meta": json.dumps(meta)})
        entries = [c for c in self.checkpoints() if c["file"] != name]
        entries.append({"file": name, "epoch": epoch, "sha256": file_sha256(path)})
        old, entries = entries[:-keep] if keep > 0 else [], entries[-keep:] if keep > 0 else entries
        write_json(folder / CHECKPOINT_INDEX, {"checkpoints": entries})
        for c in old:
            (folder / c["file"]).unlink(missing_ok=True)
        return path

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Newest checkpoint whose checksum matches, or None. Corrupt ones are skipped with a warning."""
        for entry in reversed(self.checkpoints()):
            path = self.path / CHECKPOINTS / entry["file"]
            if not path.is_file() or file_sha256(path) != entry.get("sha256"):
                print(f"deepsdf-ad: warning: {path}: checkpoint missing or corrupt (checksum mismatch); "
                      "using the previous one", file=sys.stderr)
                continue
            try:
                from safetensors import safe_open

                tensors = load_file(str(path))
                with safe_open(str(path), "pt") as f:
                    meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            except (SafetensorError, OSError, json.JSONDecodeError) as e:
                print(f"deepsdf-ad: warning: {path}: unreadable checkpoint ({e}); using the previous one",
                      file=sys.stderr)
                continue
            return tensors, meta
        return None

    def save_codes(self, codes: torch.Tensor, keys: list[str]) -> None:
        with atomic_path(self.path / CODES) as tmp:
            save_file({"codes": codes.detach().contiguous().cpu()}, str(tmp), metadata={"keys": json.dumps(keys)})

    def codes(self) -> torch.Tensor:
        path = self.path / CODES
        if not path.is_file():
            raise DataError(f"{path}: no latent codes in this run")
        try:
            return load_file(str(path))["codes"]
        except (SafetensorError, OSError, KeyError) as e:
            raise DataError(f"{path}: unreadable codes file ({e})") from None
