"""Evaluation metrics against hand-computed values; eval, compare and experiment end to end on tiny digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import integrate

from deepsdf_ad.compare import CompareOptions, bootstrap_interval, check_fair, compare, method_runs
from deepsdf_ad.config import load_config
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.evaluate import EvalOptions, contour_sdf, evaluate_run
from deepsdf_ad.metrics import (
    chamfer_l1,
    chamfer_squared,
    fscore,
    iou,
    normal_consistency,
    surface_metrics,
    unit_cube_scale,
)
from deepsdf_ad.train import train
from tests.helpers import REPO, TINY, assert_one_line_error, cli
from tests.test_autoencoder import AE, make_tiny_digits


def fibonacci_sphere(n: int, r: float = 1.0) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    rho = np.sqrt(1 - z**2)
    return r * np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


# ---- metrics -------------------------------------------------------------------------------------------
def test_identical_sets_score_perfectly():
    a = np.random.default_rng(0).normal(size=(500, 3))
    assert chamfer_squared(a, a) == 0 and chamfer_l1(a, a) == 0
    assert fscore(a, a, 0.01) == (1.0, 1.0, 1.0)
    n = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert normal_consistency(a, n, a, -n) == pytest.approx(1.0)  # orientation does not matter


def test_shifted_spheres_have_the_analytic_chamfer():
    # a point at polar cosine u on a sphere of radius r is D(u) = sqrt(r^2 + d^2 - 2 r d u) from the centre of
    # the sphere shifted by d; u is uniform on the sphere, so E[(D - r)^2] = d^2 / 3 in each direction
    r, d = 1.0, 0.2
    a = fibonacci_sphere(40000, r)
    b = a + [d, 0.0, 0.0]
    assert chamfer_squared(a, b) == pytest.approx(2 * d**2 / 3, rel=0.03)
    l1, _ = integrate.quad(lambda u: 0.5 * abs(np.sqrt(r * r + d * d - 2 * r * d * u) - r), -1, 1)
    assert chamfer_l1(a, b) == pytest.approx(l1, rel=0.03)
    # concentric spheres: every distance is the radius difference
    assert (chamfer_l1(fibonacci_sphere(20000, 1.0), fibonacci_sphere(20000, 0.9))
            == pytest.approx(0.1, rel=0.02))


def test_fscore_precision_recall_by_hand():
    true = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    pred = np.array([[0.001, 0, 0], [0, 0.002, 0]])  # both near true[0]
    f, p, r = fscore(pred, true, 0.01)
    assert (p, r) == (1.0, 0.25) and f == pytest.approx(2 * 0.25 / 1.25)
    assert fscore(pred + 5, true, 0.01) == (0.0, 0.0, 0.0)


def test_normal_consistency_orthogonal_is_zero():
    p = np.random.default_rng(1).normal(size=(50, 3))
    assert normal_consistency(p, np.tile([1.0, 0, 0], (50, 1)),
                              p, np.tile([0, 1.0, 0], (50, 1))) == pytest.approx(0)


def test_volumetric_iou_of_shifted_cubes():
    c = -1 + (2 * np.arange(40) + 1) / 40  # cell centres: the cubes cover whole cells
    g = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    a = np.all(np.abs(g) <= 0.5, axis=1)
    b = np.all(np.abs(g - [0.5, 0, 0]) <= 0.5, axis=1)
    assert iou(a, b) == pytest.approx(1 / 3)


def test_onet_metrics_use_the_unit_cube():
    true = fibonacci_sphere(20000, 1.0)  # bounding box side 2 -> scale 0.5
    assert unit_cube_scale(true) == pytest.approx(0.5, rel=1e-3)
    m = surface_metrics(fibonacci_sphere(20000, 0.9), None, true, None)
    assert m["chamfer_l1"] == pytest.approx(0.05, rel=0.03)  # 0.1 in the unit-sphere frame
    assert m["fscore"] == 0.0  # 0.05 > 1% of the side
    assert m["chamfer"] == pytest.approx(2 * 0.01, rel=0.03)  # DeepSDF's stays in the given frame
    m = surface_metrics(fibonacci_sphere(20000, 0.995), None, true, None)
    assert m["fscore"] == 1.0  # 0.0025 < 0.01


def test_contour_sdf_of_a_circle():
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    c = 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    p = np.random.default_rng(0).uniform(-1, 1, (1000, 2))
    np.testing.assert_allclose(contour_sdf(c, c / 0.5, p), np.linalg.norm(p, axis=1) - 0.5, atol=2e-3)


def test_bootstrap_interval_brackets_the_mean():
    v = np.random.default_rng(0).normal(1.0, 0.1, 400)
    lo, hi = bootstrap_interval(v)
    assert lo < v.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.25)


# ---- eval, compare, experiment -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_tiny_digits(tmp_path_factory.mktemp("digits"))


def _cfg(*extra):
    return load_config(REPO / "configs" / "digits_autodecoder.yaml", [*TINY, *extra])


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    ad = train(_cfg(), digits, base / "ad", epochs=2, device="cpu", progress=False)
    ae = train(_cfg(*AE), digits, base / "ae", epochs=2, device="cpu", progress=False)
    return ad, ae


def test_eval_full_and_scan(digits, runs, tmp_path):
    ad, ae = runs
    for run, mode in ((ad, "optimise"), (ae, "encode")):
        for inp in ("full", "scan"):
            res = evaluate_run(run.path, digits, EvalOptions(input=inp, resolution=24, limit=2), device="cpu",
                               progress=False)
            assert res["mode"] == mode and len(res["shapes"]) == 4
            for rec in res["shapes"]:
                assert 0 <= rec["iou"] <= 1 and rec["near_contour_error"] >= 0 and rec["code_seconds"] >= 0
    res = evaluate_run(ad.path, digits, EvalOptions(split="train", resolution=24, limit=1), device="cpu",
                       progress=False)
    assert res["mode"] == "table" and all(r["code_seconds"] == 0 for r in res["shapes"])
    out = tmp_path / "e.json"
    cli("eval", "--run", ae.path, "--data", digits, "--out", out, "--resolution", "24", "--limit", "1",
        "--mode", "encode+refine", "--quiet", check=True)
    saved = json.loads(out.read_text())
    assert saved["mode"] == "encode+refine" and saved["summary"]["all"]["iou"]["mean"] >= 0


def test_compare_refuses_unfair_runs(digits, runs, tmp_path):
    ad, _ = runs
    longer = train(_cfg(), digits, tmp_path / "longer", epochs=3, device="cpu", progress=False)
    wider = train(_cfg("model.decoder.hidden=[16,16,16,16]"), digits, tmp_path / "wider", epochs=2,
                  device="cpu", progress=False)
    with pytest.raises(DataError,
                       match=r"runs are not comparable: train.epochs differs \(ad: 2, longer: 3\)"):
        check_fair({"ad": method_runs(ad.path), "longer": method_runs(longer.path)})
    proc = cli("compare", ad.path, wider.path, "--data", digits, "--out", tmp_path / "rep")
    assert_one_line_error(proc, "runs are not comparable", "model.decoder differs", "hidden=[32,32,32,32]",
                          "hidden=[16,16,16,16]")
    assert not (tmp_path / "rep" / "report.md").exists()


def test_experiment_end_to_end_via_cli(digits, tmp_path):
    ood = make_tiny_digits(tmp_path / "ood", n=8, labels=(2,), seed=1)
    exp = {"name": "tiny", "seeds": [0, 1],
           "methods": {"autodecoder": "configs/digits_autodecoder.yaml",
                       "autoencoder": {"config": "configs/digits_pointnet_ae.yaml", "set": AE}},
           "set": [*TINY, "train.epochs=2", "reconstruct.iterations=10"],
           "compare": {"limit": 1, "resolution": 24, "samples": 3, "steps": 3}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(exp))
    proc = cli("experiment", path, "--data", digits, "--ood", ood, "--out", tmp_path / "exp", "--quiet",
               "--device", "cpu", check=True)
    assert "held-out autodecoder (optimise)" in proc.stdout and "held-out autoencoder (encode)" in proc.stdout
    report = tmp_path / "exp" / "report"
    md = (report / "report.md").read_text()
    for title in ("Representation", "Reconstruction of held-out", "Completion", "Out-of-distribution",
                  "Generation", "Training curves"):
        assert title in md
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    for fig in ("reconstruction.png", "completion.png", "ood.png", "generation.png", "curves.png"):
        assert (report / fig).stat().st_size > 1000
    results = json.loads((report / "results.json").read_text())
    assert results["methods"]["autoencoder"]["seeds"] == 2  # seeds pooled: 2 runs x 2 labels x 1 digit
    assert results["sections"]["reconstruction"]["methods"]["autoencoder"]["stats"]["all"]["shapes"] == 4


def test_compare_resumes_from_kept_evaluations(digits, runs, tmp_path, monkeypatch):
    """A second comparison reads each run's kept evaluation (no shape measured again, the same results); a
    run trained further (a new checkpoint) or another option is measured again."""
    import deepsdf_ad.compare as cmp

    ad, ae = runs
    opts = CompareOptions(limit=1, resolution=24, sections=["reconstruction", "completion"])
    first = compare([ad.path, ae.path], digits, tmp_path / "rep", opts=opts, device="cpu", progress=False)
    calls = []
    real = cmp.evaluate_run
    monkeypatch.setattr(cmp, "evaluate_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = compare([ad.path, ae.path], digits, tmp_path / "rep", opts=opts, device="cpu", progress=False)
    assert calls == []
    for sec in ("reconstruction", "completion"):
        for m in ("ad", "ae"):
            a, b = (r["sections"][sec]["methods"][m]["shapes"] for r in (again, first))
            assert a == b
    compare([ad.path, ae.path], digits, tmp_path / "rep", opts=CompareOptions(
        limit=1, resolution=20, sections=["reconstruction"]), device="cpu", progress=False)
    assert len(calls) == 2  # another resolution: both runs measured again
    more = train(_cfg(), digits, tmp_path / "ad_more", epochs=2, device="cpu", progress=False)
    kept = cmp.kept_evaluation(method_runs(more.path)[0], digits, cmp.EvalOptions(limit=1, resolution=24),
                               tmp_path / "k", "cpu", False)
    train(_cfg(), digits, tmp_path / "ad_more", epochs=3, device="cpu", progress=False)  # a new checkpoint
    cmp.kept_evaluation(method_runs(more.path)[0], digits, cmp.EvalOptions(limit=1, resolution=24),
                        tmp_path / "k", "cpu", False)
    assert len(calls) == 4 and kept["codes"].shape[0] == len(kept["shapes"])


def test_an_evaluation_killed_mid_way_resumes_from_its_last_batch(digits, runs, tmp_path, monkeypatch):
    """A comparison killed after two batches of shapes measures only the rest when run again, and the
    evaluation is the one measured in one go (each batch's search seeded by its position); its scratch
    goes."""
    import deepsdf_ad.compare as cmp
    import deepsdf_ad.evaluate as ev
    from deepsdf_ad.evaluate import PartialEval, resumable

    ad, _ = runs
    eopts = EvalOptions(input="scan", resolution=24, limit=2, batch=1)
    whole = evaluate_run(ad.path, digits, eopts, device="cpu", progress=False, keep_codes=True)
    real_eval, real_measure = cmp.evaluate_run, ev.measure_shape

    def killed(*a, on_batch=None, **k):
        def stop(done):
            on_batch(done)
            if len(done.records) == 2:
                raise KeyboardInterrupt
        return real_eval(*a, on_batch=stop, **k)

    monkeypatch.setattr(cmp, "evaluate_run", killed)
    run, folder = method_runs(ad.path)[0], tmp_path / "kept"
    with pytest.raises(KeyboardInterrupt):
        cmp.kept_evaluation(run, digits, eopts, folder, "cpu", False)
    assert sorted(p.name for p in folder.iterdir()) == ["ad.lock", "ad.partial.json",
                                                        "ad.partial.safetensors"]
    monkeypatch.setattr(cmp, "evaluate_run", real_eval)
    measured = []
    monkeypatch.setattr(ev, "measure_shape",
                        lambda *a, **k: measured.append(a[3].key) or real_measure(*a, **k))
    resumed = cmp.kept_evaluation(run, digits, eopts, folder, "cpu", False)
    assert measured == [r["key"] for r in whole["shapes"][2:]]
    def untimed(rec):
        return {k: v for k, v in rec.items() if k not in ("code_seconds", "mesh_seconds")}

    assert [untimed(r) for r in resumed["shapes"]] == [untimed(r) for r in whole["shapes"]]
    assert torch.allclose(resumed["codes"], whole["codes"]) and resumed["code_loss"] == whole["code_loss"]
    assert sorted(p.name for p in folder.iterdir()) == ["ad.json", "ad.lock", "ad.safetensors"]
    # a partial evaluation of other shapes, or one cut inside a batch, is not resumed
    part = PartialEval(whole["shapes"][:2], whole["codes"][:2], [], "optimise")
    refs = [type("R", (), {"key": r["key"]})() for r in whole["shapes"]]
    assert resumable(part, refs, 1) is part and resumable(part, refs, 3).records == []
    assert resumable(part, refs[1:], 1).records == [] and resumable(None, refs, 1).records == []


HOLD_CLAIM = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="claims are flock locks (POSIX)")
def test_comparisons_in_several_processes_share_the_evaluations(digits, runs, tmp_path, monkeypatch):
    """An evaluation another process has claimed is not measured beside it: without waiting, None at once;
    compare measures the unclaimed ones first, then waits for the holder, and a holder that ended without
    keeping its evaluation (killed) leaves it to the waiter, which measures it."""
    import subprocess

    import deepsdf_ad.compare as cmp

    ad, ae = runs
    folder = tmp_path / "rep" / cmp.EVAL_CACHE / "reconstruction" / "ad"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(folder / f"ad{cmp.CLAIM}"), "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        eopts = EvalOptions(resolution=24, limit=1)
        assert cmp.kept_evaluation(method_runs(ad.path)[0], digits, eopts, folder, "cpu", False,
                                   wait=False) is None
        assert [p.name for p in folder.iterdir()] == ["ad.lock"]  # nothing measured, nothing kept
        order = []
        real = cmp.evaluate_run
        monkeypatch.setattr(cmp, "evaluate_run",
                            lambda *a, **k: order.append(Path(a[0]).name) or real(*a, **k))
        res = compare([ad.path, ae.path], digits, tmp_path / "rep", device="cpu", progress=False,
                      opts=CompareOptions(limit=1, resolution=24, sections=["reconstruction"]))
        assert holder.poll() is not None  # compare waited for the holder to end
        assert order == ["ae", "ad"]  # the unclaimed evaluation first, the claimed one after its holder left
        assert set(res["sections"]["reconstruction"]["methods"]) == {"ad", "ae"}
    finally:
        holder.kill()
        holder.wait()


def test_compare_measures_the_amortisation_gap_of_each_encoder(digits, runs, tmp_path):
    """In the refined sections every encoder is measured a second time with its codes refined by optimisation
    (encode+refine): the objective at the encoder's code and after refining it, per shape, and the metrics."""
    ad, ae = runs
    opts = CompareOptions(limit=2, resolution=24, sections=["reconstruction", "completion"])
    res = compare([ad.path, ae.path], digits, tmp_path / "rep", opts=opts, device="cpu", progress=False)
    assert "refined" not in res["sections"]["reconstruction"]  # default: completion only
    sec = res["sections"]["completion"]
    assert set(sec["refined"]) == {"ae"}  # the autodecoder's codes are optimised already
    ref, enc = sec["refined"]["ae"], sec["methods"]["ae"]
    assert (ref["mode"], enc["mode"]) == ("encode+refine", "encode")
    assert ref["stats"]["all"]["shapes"] == enc["stats"]["all"]["shapes"] == 4
    assert [r["key"] for r in ref["shapes"]] == [r["key"] for r in enc["shapes"]]
    obj = ref["objective"]
    assert obj["shapes"] == 4 and obj["refined"]["mean"] < obj["encoded"]["mean"]
    assert obj["gap"]["mean"] == pytest.approx(obj["encoded"]["mean"] - obj["refined"]["mean"])
    assert (tmp_path / "rep" / "evaluations" / "completion" / "ae+refine").is_dir()
    off = compare([ad.path, ae.path], digits, tmp_path / "rep", device="cpu", progress=False,
                  opts=CompareOptions(limit=2, resolution=24, sections=["completion"], refine=[]))
    assert "refined" not in off["sections"]["completion"]
    with pytest.raises(DataError, match="--refine bogus: not a section"):
        compare([ad.path], digits, tmp_path / "rep", opts=CompareOptions(refine=["bogus"]), device="cpu")


def test_observation_losses_pair_each_code_with_its_own_observations(runs):
    """The data term is 0 for a code whose own field gave the observations' bounds, and not for another."""
    import torch

    from deepsdf_ad.losses import loss_clamp
    from deepsdf_ad.reconstruct import Observations, observation_losses
    from deepsdf_ad.runs import Run, load_trained

    cfg, model = load_trained(Run(runs[1].path), torch.device("cpu"))
    model.eval()
    codes = torch.randn(2, model.latent_size, generator=torch.Generator().manual_seed(0))
    x = np.random.default_rng(0).uniform(-1, 1, (300, 2)).astype(np.float32)
    with torch.no_grad():
        fields = [model.decode(codes[i:i + 1], torch.from_numpy(x)[None])[0].numpy() for i in range(2)]
    obs = [Observations(x, f, f) for f in fields]
    own = observation_losses(model, obs, codes, cfg.reconstruct, loss_clamp(cfg), torch.device("cpu"))
    swapped = observation_losses(model, obs, codes.flip(0), cfg.reconstruct, loss_clamp(cfg),
                                 torch.device("cpu"))
    assert own.shape == (2,) and own.max() < 1e-6 and swapped.min() > 1e-4


def test_compare_reports_a_run_that_did_not_learn(digits, runs, tmp_path):
    """A run whose recorded SDF loss stayed flat for its first 10 epochs (train's own check) is listed in
    results.json and named in the report's first lines; a run that learned is not."""
    import shutil

    from deepsdf_ad.viz.report import write_report

    ad, _ = runs
    for name, losses in (("ad", [0.05 * 0.9**e for e in range(10)]), ("stuck", [0.0854] * 10)):
        shutil.copytree(ad.path, tmp_path / name)  # the same model, with these losses recorded
        rows = [{"epoch": e + 1, "loss": v, "sdf_loss": v, "reg_loss": 0.0, "seconds": 1.0}
                for e, v in enumerate(losses)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stuck = tmp_path / "stuck"
    opts = CompareOptions(limit=1, resolution=16, sections=["representation"])
    res = compare([tmp_path / "ad", stuck], digits, tmp_path / "rep", opts=opts, device="cpu", progress=False,
                  report=write_report)
    assert res["methods"]["ad"]["not_learning"] == []
    (entry,) = res["methods"]["stuck"]["not_learning"]
    assert entry["seed"] == 0 and entry["run"] == str(stuck)
    assert "has not fallen in 10 epochs" in entry["message"]
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "**Warning: stuck, seed 0" in report and "did not learn" in report and "Warning: ad" not in report
