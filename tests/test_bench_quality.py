"""bench_quality's scoring: failures count as the worst case, verdicts only from a paired test with
n >= 10."""

import importlib.util

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("bench_quality", REPO / "benchmarks" / "bench_quality.py")
bq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bq)


def _rows(values, cat="chair"):
    return [{"key": f"{cat}/{i}", "category": cat, "chamfer_x1e3": v, "fscore": 0.5,
             "normal_consistency": 0.8}
            for i, v in enumerate(values)]


def test_failures_score_as_the_sections_worst_and_are_counted():
    recs = {"A": _rows([1.0, 2.0]), "B": _rows([3.0, 9.0])}
    recs["A"].append({"key": "chair/2", "category": "chair", "failed": "empty mesh"})
    out = bq.worst_case(recs)
    failed = out["A"][2]
    assert failed["chamfer_x1e3"] == 9.0 and failed["fscore"] == 0.0 and failed["normal_consistency"] == 0.0
    table = "\n".join(bq.table(out, "t"))
    assert "| chair | A | 3 | 1 |" in table  # n 3, 1 failed: the failure is in the mean and the median
    assert "| all | A | 3 | 1 | 4.00 | 2.00 |" in table


def test_verdicts_need_ten_pairs():
    few = {"A": _rows(range(5)), "B": _rows(range(1, 6))}
    assert "no verdict" in bq.paired_tests(few, "A", ["B"])[0]
    many = {"A": _rows([0.5 * i for i in range(12)]), "B": _rows([0.5 * i + 1 + 0.1 * i for i in range(12)])}
    line = bq.paired_tests(many, "A", ["B"])[0]
    assert "n = 12" in line and "lower on 12" in line and "A lower (p < 0.05)" in line


def test_the_nearest_shape_over_the_extra_training_set(tmp_path):
    """The ad+ run's nearest-shape baseline searches the training shapes of the data it is given: when those
    hold the held-out shapes themselves, each scan finds its own shape (chamfer 0); over DATA's training
    shapes it finds another one, as the plain baseline does."""
    from deepsdf_ad.data_prep import formats
    from deepsdf_ad.data_prep.formats import DataRoot
    from tests.test_article import tiny_shapes

    data = tiny_shapes(tmp_path, ("table", "chair"), 3, 0.34, scans=1)
    plus = tmp_path / "plus"  # DATA's files, with every shape (held-out ones too) in the training split
    for sub in (formats.SDF_DIR, formats.SURFACE_DIR, formats.NORM_DIR, formats.SCANS_DIR):
        plus.mkdir(exist_ok=True)
        (plus / sub).symlink_to((data / sub).resolve())
    every: dict[str, list[str]] = {}
    for ref in DataRoot(data).shapes("train") + DataRoot(data).shapes("test"):
        every.setdefault(ref.category, []).append(ref.id)
    formats.write_split(plus / formats.SPLITS_DIR / "train.json", every)
    formats.write_json(plus / formats.MANIFEST, DataRoot(data).manifest())

    own = bq.nearest_records(data, plus, None)
    plain = bq.baseline_records(data, None)["nearest training shape"]
    assert len(own) == len(plain) >= 2
    for a, b in zip(own, plain, strict=True):
        assert a["key"] == b["key"] == a["nearest"] != b["nearest"]
        assert a["chamfer_x1e3"] < 1e-9 < b["chamfer_x1e3"]
