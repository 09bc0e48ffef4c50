"""Mesh archives (``.tar``, ``.tar.gz``, ``.tar.xz``): extracted once, safely, where a command needs them.

The shared data's ``modelnet10_train_extra.tar.xz`` (720 more ModelNet10 training meshes) is the one this
toolkit reads: ``deepsdf-ad article``'s ``{extra:...}`` sources and ``benchmarks/bench_quality.py --extra``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from deepsdf_ad.data_prep.formats import DataError

DONE = ".extracted"
"""Marker written last in an extracted folder: its content is complete (names the archive)."""


def extract_once(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``archive`` extracted into ``dest`` (made only once: into a temporary folder beside it, renamed when
    complete, so a killed extraction leaves no half folder). Members that would land outside ``dest``, links
    and device files are refused (``tarfile``'s ``data`` filter). Returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    if (dest / DONE).is_file():
        return dest
    if dest.exists():
        raise DataError(f"{dest}: exists but is not a complete extraction of {archive.name} (no {DONE}); "
                        "remove it or choose another folder")
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: a killed extraction's leftover
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract ({e})") from None
    (tmp / DONE).write_text(f"{archive.name}\n")
    tmp.rename(dest)
    return dest


def category_folder(root: str | os.PathLike, category: str) -> Path:
    """The folder named ``category`` below ``root`` (an extracted archive may nest it), or a DataError."""
    root = Path(root)
    found = sorted((p for p in root.rglob(category) if p.is_dir()), key=lambda p: len(p.parts))
    if not found:
        raise DataError(f"{root}: no folder of category '{category}' in it")
    return found[0]
