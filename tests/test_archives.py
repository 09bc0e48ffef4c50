"""The extra-meshes archive: extracted once and safely (:mod:`deepsdf_ad.data_prep.archives`), and the
article's ``{extra:...}`` sources built from it, on a small archive made here (tests never extract the
shared one)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deepsdf_ad.article import BuildOptions, _expand, _mesh_source_path
from deepsdf_ad.data_prep.archives import DONE, category_folder, extract_once
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.shapes import write_family


def small_archive(path: Path, meshes: Path) -> Path:
    """``meshes`` (category folders) packed as a .tar.xz under a top folder, as the shared archive is."""
    with tarfile.open(path, "w:xz") as tar:
        tar.add(meshes, arcname="extra_top")
    return path


def test_extract_once_is_complete_idempotent_and_safe(tmp_path):
    write_family(tmp_path / "m", families=("chair", "table"), per_family=2, seed=0)
    arc = small_archive(tmp_path / "extra.tar.xz", tmp_path / "m")
    dest = extract_once(arc, tmp_path / "x")
    assert (dest / DONE).is_file() and sorted(p.name for p in category_folder(dest, "chair").iterdir()) == [
        "chair_000.obj", "chair_001.obj"]
    (dest / "extra_top" / "table" / "table_000.obj").unlink()
    assert extract_once(arc, dest) == dest  # done once: not extracted again
    assert not (dest / "extra_top" / "table" / "table_000.obj").exists()
    with pytest.raises(DataError, match="no folder of category 'sofa'"):
        category_folder(dest, "sofa")
    # a half extraction (no marker) is never taken for a complete one, nor overwritten
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="not a complete extraction"):
        extract_once(arc, tmp_path / "half")
    # a member that would land outside the folder is refused, and nothing is left behind
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="cannot extract"):
        extract_once(evil, tmp_path / "e")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "e").exists()
    assert not (tmp_path / "e.partial").exists()


def test_article_extra_sources_link_the_archive_meshes(tmp_path):
    shared = tmp_path / "shared"
    write_family(shared / "meshes", families=("chair",), per_family=2, seed=1)
    write_family(tmp_path / "m", families=("chair", "table"), per_family=3, seed=0)
    small_archive(shared / "modelnet10_train_extra.tar.xz", tmp_path / "m")
    opts = BuildOptions(work=tmp_path / "work", shared=shared, max_meshes=2)
    args = _expand("prep meshes {extra:chair,table} --held-out {meshes:chair} --out {data}", opts,
                   tmp_path / "data", tmp_path / "ood")
    extra, held = _mesh_source_path("extra", "chair,table", opts), _mesh_source_path("meshes", "chair", opts)
    assert args == ["prep", "meshes", str(extra), "--held-out", str(held), "--out", str(tmp_path / "data")]
    assert extra != held and extra.name == "extra-chair+table-2"
    assert sorted(p.name for p in (extra / "table").iterdir()) == ["table_000.obj", "table_001.obj"]
    assert all(p.is_symlink() and p.resolve().is_file() for p in (extra / "chair").iterdir())
    assert sorted(p.name for p in (held / "chair").iterdir()) == ["chair_000.obj", "chair_001.obj"]
    assert (held / "chair" / "chair_000.obj").resolve().parent == (shared / "meshes" / "chair").resolve()
