"""Where a command may write: never onto one of its own inputs.

Every command names its inputs (files, and folders whose contents it reads) and its ``--out``; before anything
is read, :func:`refuse_input_as_output` stops one whose output (or the ``.json`` sidecar written beside it)
resolves to an input, an input's sidecar, or a file inside an input folder: ``reconstruct scan.ply --out
scan.ply`` would otherwise replace the scan with the mesh. Paths are compared after resolving symbolic links,
and by inode when both exist (hard links, different spellings of one file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from deepsdf_ad.data_prep.formats import DataError

SIDECAR = ".json"
"""Suffix of the sidecar a scan (``deepsdf-ad scan``) has beside it."""

RUN_FILES = ("config.yaml", "shapes.json", "metrics.jsonl", "latent_codes.safetensors")
"""The files of a run folder a command reads (see :mod:`deepsdf_ad.runs`)."""
RUN_FOLDERS = ("checkpoints",)
DATA_FILES = ("manifest.json",)
"""The files and folders of a data root a command reads (see :mod:`deepsdf_ad.data_prep.formats`)."""
DATA_FOLDERS = ("splits", "sdf", "surface", "scans", "shards", "store")


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file or folder (inode when both exist, else resolved paths)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def run_inputs(run: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(files, folders) of a run folder that commands read."""
    r = Path(run)
    return [r / n for n in RUN_FILES], [r / n for n in RUN_FOLDERS]


def data_inputs(data: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(files, folders) of a data root that commands read."""
    d = Path(data)
    return [d / n for n in DATA_FILES], [d / n for n in DATA_FOLDERS]


def refuse_input_as_output(out: str | os.PathLike | None, files: Iterable = (), folders: Iterable = (),
                           flag: str = "--out", in_sidecars: bool = True, out_sidecar: bool = False) -> None:
    """Raise :class:`DataError` (``OUT: is also an input ...``) when ``out`` would overwrite an input.

    Args:
        out: the output path (a file or a folder); None: nothing to check.
        files: input files (or folders ``out`` may not be); with ``in_sidecars`` their ``.json`` sidecars
            count as inputs too.
        folders: input folders: ``out`` may be neither one of them nor anything inside one.
        flag: the option that named ``out``, for the message.
        in_sidecars: whether the inputs' ``.json`` sidecars are read (scans).
        out_sidecar: whether a ``.json`` sidecar is written beside ``out`` (``scan``).
    """
    if out is None:
        return
    out = Path(out)
    outs = _with_sidecar(out, out_sidecar)
    for f in files:
        if f is None:
            continue
        f = Path(f)
        ins = _with_sidecar(f, in_sidecars)
        for o in outs:
            for i in ins:
                if same_path(o, i):
                    what = f"the input {f}" if i == f else f"the sidecar of the input {f}"
                    raise DataError(f"{out}: {flag} is {what}; writing there would replace it; choose "
                                    f"another {flag}")
    for d in folders:
        if d is None:
            continue
        d = Path(d)
        if _inside(out, d):
            raise DataError(f"{out}: {flag} is inside the input folder {d}; writing there would change what "
                            f"is read; choose another {flag}")


def _with_sidecar(path: Path, sidecar: bool) -> list[Path]:
    """``[path]``, and its ``.json`` sidecar after it when ``sidecar`` (and ``path`` is not a sidecar
    itself)."""
    return [path, path.with_suffix(SIDECAR)] if sidecar and path.suffix and path.suffix != SIDECAR else [path]
