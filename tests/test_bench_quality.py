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
    """The ad+ run's nearest-shape baseline searches its own training shapes: over the same shapes it is the
    plain baseline, shape for shape."""
    from tests.test_article import tiny_shapes

    data = tiny_shapes(tmp_path, ("table", "chair"), 3, 0.34, scans=1)
    plain = bq.baseline_records(data, None)["nearest training shape"]
    plus = bq.nearest_plus_records(data, data, None)
    assert len(plus) == len(plain) >= 2
    for a, b in zip(plus, plain, strict=True):
        assert a["key"] == b["key"] and a["nearest"] == b["nearest"]
        assert abs(a["chamfer_x1e3"] - b["chamfer_x1e3"]) < 1e-9
