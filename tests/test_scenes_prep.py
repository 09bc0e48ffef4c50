"""``deepsdf-ad prep scenes`` (issue 8, data side): composition never overlaps and rests on the floor, signs
on composed scenes match analytic truth, determinism by seed, held-out scenes hold held-out meshes, the data
layout through the real CLI (and ``train`` on it), resume, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.meshes import SamplingConfig, SignedDistance
from deepsdf_ad.data_prep.scenes import (
    FLOOR_Z,
    ROOM_HALF,
    SceneConfig,
    Source,
    build_scene,
    compose_scene,
    footprint,
    footprints_clear,
    prep_scenes,
    units_per_metre,
)
from deepsdf_ad.data_prep.shapes import write_family
from tests.helpers import TINY, assert_one_line_error, box_sdf, cli

SAMPLES = 3000
SETS = [a for kv in TINY for a in ("--set", kv)]


def tiny_cfg(**kw) -> SceneConfig:
    base = dict(scenes=4, objects=(2, 3), test_fraction=0.25, screen_samples=2000)
    base.update(kw)
    return SceneConfig(SamplingConfig(samples=SAMPLES, surface_points=2000), **base)


def fake_pool(rng: np.random.Generator, n: int = 12) -> list[Source]:
    """Sources with random bounding boxes (no mesh files: composition only reads the boxes)."""
    cats = ["chair", "table", "sofa", "lamp"]
    return [Source(f"/nowhere/{i}.obj", cats[i % 4], f"m{i}", "0", (0.0, 0.0, 0.0), 1.0,
                   tuple(rng.uniform(0.2, 1.9, 3))) for i in range(n)]


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def cross2(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def inside_convex(p: np.ndarray, poly: np.ndarray) -> bool:
    c = [cross2(poly[(i + 1) % len(poly)] - poly[i], p - poly[i]) for i in range(len(poly))]
    return all(x >= 0 for x in c) or all(x <= 0 for x in c)


def segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    d1, d2 = cross2(b - a, c - a), cross2(b - a, d - a)
    d3, d4 = cross2(d - c, a - c), cross2(d - c, b - c)
    return d1 * d2 < 0 and d3 * d4 < 0


def polygon_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Exact distance of two convex polygons (0 when they overlap): the slow, obvious reference."""
    ea = [(a[i], a[(i + 1) % len(a)]) for i in range(len(a))]
    eb = [(b[i], b[(i + 1) % len(b)]) for i in range(len(b))]
    if (any(inside_convex(p, b) for p in a) or any(inside_convex(p, a) for p in b)
            or any(segments_cross(*e, *f) for e in ea for f in eb)):
        return 0.0
    # apart: the closest pair of points involves a vertex of one and an edge of the other
    return min([segment_distance(p, *e) for p in a for e in eb]
               + [segment_distance(p, *e) for p in b for e in ea])


# ---- footprints and placement, without meshes --------------------------------------------------
def test_separating_axis_test_on_hand_made_rectangles():
    a = footprint(np.array([0.0, 0.0]), np.array([0.5, 0.5]), 0.0)
    b = footprint(np.array([1.5, 0.0]), np.array([0.5, 0.5]), 0.0)  # 0.5 apart along x
    assert footprints_clear(a, b, 0.4) and not footprints_clear(a, b, 0.6)
    c = footprint(np.array([0.8, 0.8]), np.array([0.5, 0.5]), np.pi / 4)  # a diamond over a's corner
    assert polygon_distance(a, c) == 0.0 and not footprints_clear(a, c, 0.0)
    d = footprint(np.array([1.6, 1.6]), np.array([0.5, 0.5]), np.pi / 4)
    assert footprints_clear(a, d, 0.0) and footprints_clear(a, d, polygon_distance(a, d) - 1e-9)
    plus = footprint(np.array([0.0, 0.0]), np.array([1.0, 0.1]), np.pi / 2)  # crosses a, no corner inside
    thin = footprint(np.array([0.0, 0.0]), np.array([1.0, 0.1]), 0.0)
    assert polygon_distance(thin, plus) == 0.0 and not footprints_clear(thin, plus, 0.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), room=st.floats(3.0, 8.0), gap=st.floats(0.0, 0.3),
       lo=st.integers(1, 4), extra=st.integers(0, 2))
def test_composition_never_overlaps_and_stays_in_the_room(seed, room, gap, lo, extra):
    rng = np.random.default_rng(seed)
    cfg = tiny_cfg(room_size=room, gap=gap, objects=(lo, lo + extra), restarts=20)
    try:
        placed = compose_scene(fake_pool(rng), cfg, rng)
    except DataError as e:
        assert "cannot place" in str(e) and "--room-size" in str(e)
        return
    assert lo <= len(placed) <= lo + extra
    assert len({p.source.id for p in placed}) == len(placed)  # each mesh at most once per scene
    gap_units = gap * units_per_metre(room)
    for i, p in enumerate(placed):
        fp = p.footprint()
        assert np.abs(fp).max() <= ROOM_HALF + 1e-9
        for q in placed[i + 1:]:
            assert polygon_distance(fp, q.footprint()) >= gap_units - 1e-9
        # the transform puts the normalised box's bottom on the floor and its corners on the footprint
        box = (np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
               * 0.5 * np.asarray(p.source.extent))
        moved = box @ p.transform()[:3, :3].T + p.transform()[:3, 3]
        assert np.isclose(moved[:, 2].min(), FLOOR_Z) and moved[:, 2].max() <= 0.9 + 1e-9
        assert min(np.linalg.norm(fp - c, axis=1).min() for c in moved[:, :2]) < 1e-9


def test_impossible_placement_is_an_error_naming_the_flags():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"cannot place 5 objects .* fewer --objects, a larger --room-size"):
        compose_scene(fake_pool(rng), tiny_cfg(room_size=1.0, objects=(5, 5), restarts=3, tries=20), rng, "s")


def test_composition_is_deterministic_by_seed():
    pool = fake_pool(np.random.default_rng(1))
    a = [p.record() for p in compose_scene(pool, tiny_cfg(), np.random.default_rng(5))]
    b = [p.record() for p in compose_scene(pool, tiny_cfg(), np.random.default_rng(5))]
    c = [p.record() for p in compose_scene(pool, tiny_cfg(), np.random.default_rng(6))]
    assert a == b and a != c


# ---- with meshes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """5 procedural meshes of each family (table, bottle, chair), +z up, in arbitrary units."""
    d = tmp_path_factory.mktemp("scene_src") / "meshes"
    write_family(d, per_family=5, seed=3)
    return d


def write_boxes(d: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        m = trimesh.creation.box(extents=rng.uniform(1.0, 4.0, 3))
        m.apply_translation(rng.uniform(-5, 5, 3))
        (d / "box").mkdir(parents=True, exist_ok=True)
        m.export(d / "box" / f"box_{i}.off")
    return d


def test_placed_meshes_rest_on_the_floor_apart(src):
    from deepsdf_ad.data_prep.scenes import screen_one, source_of

    files = sorted(src.rglob("*.obj"))
    pool = [source_of(screen_one(str(f), f.parent.name, f.stem, tiny_cfg())) for f in files]
    cfg = tiny_cfg(objects=(4, 5), room_size=3.0, gap=0.1)
    for seed in range(5):
        objects = [p.record() for p in compose_scene(pool, cfg, np.random.default_rng(seed))]
        build_scene(objects)
        parts = []
        for o in objects:
            m = trimesh.load(o["file"], force="mesh", process=False)
            m.apply_transform(np.asarray(o["transform"]))
            parts.append(m)
            assert np.isclose(m.vertices[:, 2].min(), FLOOR_Z, atol=1e-9)  # rests on the floor
            assert np.allclose(o["bbox"], [m.vertices.min(axis=0), m.vertices.max(axis=0)], atol=1e-7)
            assert np.abs(m.vertices[:, :2]).max() <= ROOM_HALF + 1e-9
        gap = cfg.gap * units_per_metre(cfg.room_size)
        for i, a in enumerate(parts):  # a mesh-distance test, independent of the footprints
            pts = a.sample(2000, seed=seed)
            for b in parts[i + 1:]:
                assert SignedDistance(b, orient=False).unsigned(pts).min() >= gap - 1e-6


def test_signs_on_a_composed_scene_of_boxes_match_the_truth(tmp_path):
    """Boxes normalised, scaled, turned and placed: every sample's sign and distance against the analytic
    union."""
    write_boxes(tmp_path / "src")
    m = prep_scenes(tmp_path / "src", tmp_path / "data",
                    tiny_cfg(scenes=2, objects=(3, 3), test_fraction=0.0), progress=False)
    for rec in m["meshes"]:
        pos, neg = formats.load_sdf_samples(tmp_path / "data" / "sdf" / "scene" / f"{rec['id']}.npz")
        s = np.concatenate([pos, neg])
        truth = np.full(len(s), np.inf)
        for o in rec["objects"]:
            c, h, yaw = (np.asarray(o["obb"]["center"]), np.asarray(o["obb"]["half_extents"]),
                         np.radians(o["obb"]["yaw_deg"]))
            rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            truth = np.minimum(truth, box_sdf((s[:, :3] - c) @ rot, h))
        # the union's exact sdf equals min over boxes outside; inside (one box) it is that box's sdf
        np.testing.assert_allclose(s[:, 3], truth, atol=1e-5)
        assert rec["sign_quality"]["ambiguous"] == 0.0


# ---- the CLI end to end ------------------------------------------------------------------------
def prep(src: Path, out: Path, *extra: str, check: bool = True):
    return cli("prep", "scenes", src, "--out", out, "--samples", str(SAMPLES), "--quiet", *extra, check=check)


@pytest.fixture(scope="module")
def prepared(src, tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("scene_data") / "data"
    proc = prep(src, data, "--scenes", "4", "--objects", "2-3", "--scans", "2", "--test-fraction", "0.25",
                "--room-size", "3")
    return {"data": data, "proc": proc, "manifest": json.loads((data / formats.MANIFEST).read_text())}


def test_cli_writes_the_scene_layout(prepared):
    data, m = prepared["data"], prepared["manifest"]
    assert "4 of 4 scenes ok (3 train, 1 test)" in prepared["proc"].stdout
    train = formats.DataRoot(data).shapes("train")
    test = formats.DataRoot(data).shapes("test")
    assert [r.key for r in train] == ["scene/train_0000", "scene/train_0001", "scene/train_0002"]
    assert [r.key for r in test] == ["scene/test_0000"]
    for ref in train + test:
        pos, neg = formats.load_sdf_samples(ref.sdf)
        assert len(pos) + len(neg) == SAMPLES and len(neg) > 0 and (neg[:, 3] <= 0).all()
        assert np.abs(np.concatenate([pos, neg])[:, :3]).max() < 1.3  # the normalised frame
        offset, scale = formats.load_normalization(ref.norm)
        assert np.all(offset == 0) and scale == 1.0
        mesh = trimesh.load(data / "scene_meshes" / f"{ref.id}.ply", force="mesh")
        assert (np.isclose(mesh.vertices[:, 2].min(), FLOOR_Z, atol=1e-6)
                and np.abs(mesh.vertices).max() <= 1.0)
        info = formats.load_scene_info(data / "scene_meshes" / f"{ref.id}.json")
        assert 2 <= len(info["objects"]) <= 3 and info["frame"]["up"] == "+z"
        assert all(Path(o["file"]).is_file() and len(o["bbox"]) == 2 for o in info["objects"])
    scans = sorted(p.name for p in (data / "scans" / "scene").glob("*.ply"))
    assert scans == ["test_0000_0.ply", "test_0000_1.ply"]
    from deepsdf_ad.data_prep.scans import load_scan

    cloud, meta = load_scan(data / "scans" / "scene" / "test_0000_0.ply")
    assert len(cloud.points) > 500 and meta["normalization"] == {"offset": [0.0, 0.0, 0.0], "scale": 1.0}
    assert np.abs(cloud.points[:, 2] - FLOOR_Z).min() < 0.5  # it sees the objects, in the scene frame
    rec = {r["id"]: r for r in m["meshes"]}["test_0000"]
    assert rec["file"].endswith("scene_meshes/test_0000.ply") and rec["status"] == "ok"


def test_held_out_scenes_are_made_of_held_out_meshes(prepared):
    m = prepared["manifest"]
    objs = {s: {o["file"] for r in m["meshes"] if r["split"] == s for o in r["objects"]}
            for s in ("train", "test")}
    assert objs["train"] and objs["test"] and not objs["train"] & objs["test"]
    split_of = {(c, i): s for s in ("train", "test") for c, ids in m["source_split"][s].items() for i in ids}
    for r in m["meshes"]:
        assert all(split_of[(o["category"], o["id"])] == r["split"] for o in r["objects"])


def test_rerun_skips_and_redoes_only_what_changed(prepared, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    src = prepared["manifest"]["source"]
    before = {p: formats.file_sha256(p)
              for p in data.rglob("*") if p.is_file() and p.name != formats.MANIFEST}
    (data / "sdf" / "scene" / "train_0001.npz").unlink()
    proc = prep(Path(src), data, "--scenes", "4", "--objects", "2-3", "--scans", "2",
                "--test-fraction", "0.25", "--room-size", "3")
    assert "(3 unchanged, skipped)" in proc.stdout
    after = {p: formats.file_sha256(p) for p in data.rglob("*") if p.is_file() and p.name != formats.MANIFEST}
    assert after == before  # the redone scene came out byte-identical: the seed fixes everything


def test_more_scenes_keep_the_old_ones_fewer_delete_the_dropped(prepared, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    src = prepared["manifest"]["source"]
    cfg = SceneConfig(SamplingConfig(samples=SAMPLES), scenes=5, objects=(2, 3), scans=2, test_fraction=0.25,
                      room_size=3.0)  # what the CLI made of the fixture's flags, with one scene more
    m = prep_scenes(src, data, cfg, progress=False)
    assert m["summary"]["skipped_unchanged"] == 4 and m["summary"]["train"] == 4  # train_0003 is new
    assert formats.DataRoot(data).shape("scene", "train_0003").sdf.is_file()
    cfg.scenes = 2  # 1 train, 1 test: train_0001 .. train_0003 go, with all their files
    m = prep_scenes(src, data, cfg, progress=False)
    assert m["summary"]["skipped_unchanged"] == 2 and m["scene_ids"] == ["train_0000", "test_0000"]
    left = sorted(p.stem for p in (data / "scene_meshes").glob("*.ply"))
    assert left == ["test_0000", "train_0000"] and len(list((data / "sdf" / "scene").iterdir())) == 2


def test_same_seed_same_bytes_other_seed_other_scenes(src, prepared, tmp_path):
    prep(src, tmp_path / "again", "--scenes", "4", "--objects", "2-3", "--scans", "2",
         "--test-fraction", "0.25", "--room-size", "3")
    for p in (prepared["data"] / "sdf" / "scene").iterdir():
        assert formats.file_sha256(tmp_path / "again" / "sdf" / "scene" / p.name) == formats.file_sha256(p)
    other = prep_scenes(src, tmp_path / "other",
                        tiny_cfg(scenes=1, objects=(2, 3), test_fraction=0.0, room_size=3.0,
                                                          seed=1), progress=False)
    first = {r["id"]: r for r in prepared["manifest"]["meshes"]}["train_0000"]
    assert ([o["transform"] for o in other["meshes"][0]["objects"]]
            != [o["transform"] for o in first["objects"]])


def test_train_runs_on_scene_data_unchanged(prepared, tmp_path):
    from tests.helpers import REPO

    proc = cli("train", "--config", REPO / "configs" / "shapes_small.yaml", "--data", prepared["data"],
               "--out", tmp_path / "run", "--epochs", "1", "--quiet", "--device", "cpu", *SETS, check=True)
    assert "train: 1 epochs" in proc.stdout
    shapes = json.loads((tmp_path / "run" / "shapes.json").read_text())
    assert "scene/train_0000" in json.dumps(shapes)


def test_one_line_errors(src, prepared, tmp_path):
    import shutil

    from deepsdf_ad.commands.common import objects_range as _objects_range

    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(prep(empty, tmp_path / "d0", "--scenes", "2", check=False), "no meshes found")
    few = tmp_path / "few"
    write_family(few, families=("table",), per_family=3)
    assert_one_line_error(prep(few, tmp_path / "d1", "--scenes", "2", "--objects", "2-5", check=False),
                          "fewer than --objects maximum 5")
    data = tmp_path / "d2"
    shutil.copytree(prepared["data"], data)  # its screening of the meshes is reused: only the room changes
    assert_one_line_error(prep(src, data, "--scenes", "2", "--objects", "4", "--room-size", "0.5",
                               check=False),
                          "cannot place 4 objects", "--room-size")
    # the screening and the earlier scenes survive the error
    kept = json.loads((data / formats.MANIFEST).read_text())
    assert len(kept["sources"]) == 15 and kept["meshes"] == prepared["manifest"]["meshes"]
    assert_one_line_error(prep(src, tmp_path / "d3", "--scenes", "2", "--objects", "5-2", check=False),
                          "--objects")
    for bad in ("x", "0-3", "1-2-3", "3-"):
        with pytest.raises(Exception, match="range like 2-5|1 <= MIN <= MAX"):
            _objects_range(bad)
    assert _objects_range("3") == (3, 3) and _objects_range("2-5") == (2, 5)
    assert_one_line_error(prep(src, tmp_path / "d4", "--scenes", "0", check=False), "--scenes")
    assert_one_line_error(prep(src, tmp_path / "d5", "--scenes", "2", "--gap", "-1", check=False), "--gap")


def test_help():
    proc = cli("prep", "scenes", "--help")
    assert proc.returncode == 0 and "--objects" in proc.stdout and "--room-size" in proc.stdout
