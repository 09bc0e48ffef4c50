"""``deepsdf-ad article --quick`` end to end on tiny generated data: every figure the article shows exists,
every table is traced to a results.json and its numbers are the numbers in that file, the README block is
rewritten."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from deepsdf_ad.article import HEADLINE_BEGIN, HEADLINE_END, BuildOptions, build_article
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.meshes import SamplingConfig
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.shapes import write_family
from tests.helpers import REPO, assert_one_line_error, cli
from tests.test_autoencoder import make_tiny_digits

TABLE_TAG = re.compile(r"<!-- table (.*?) -->")
NUMBER = r"(–|-?[0-9.]+(?:e[-+]?[0-9]+)?)"
SECTION_CELL = re.compile(rf"^{NUMBER} / {NUMBER} \[{NUMBER}, {NUMBER}\]$")
HEADLINE_CELL = re.compile(rf"^{NUMBER} \[{NUMBER}, {NUMBER}\]$")


def tiny_shapes(root: Path, families: tuple[str, ...], per_family: int, test_fraction: float,
                scans: int) -> Path:
    write_family(root / "meshes", families=families, per_family=per_family, seed=len(families))
    prep_meshes(root / "meshes", root / "data", PrepConfig(SamplingConfig(samples=4000, surface_points=3000),
                                                          test_fraction=test_fraction, seed=0, scans=scans),
                progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def article(tmp_path_factory):
    root = tmp_path_factory.mktemp("article")
    digits = make_tiny_digits(root / "digits")
    digits_ood = make_tiny_digits(root / "digits_ood", n=8, labels=(2,), seed=1)
    shapes = tiny_shapes(root / "shapes", ("table",), 3, 0.34, scans=1)
    shapes_ood = tiny_shapes(root / "shapes_ood", ("chair",), 2, 0.5, scans=0)
    readme = root / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{HEADLINE_BEGIN}\nold table\n{HEADLINE_END}\n\nafter\n")
    proc = cli("article", "--quick", "--work", root / "work", "--out", root / "docs", "--only", "digits",
               "shapes", "--data", f"digits={digits}", "--ood", f"digits={digits_ood}",
               "--data", f"shapes={shapes}", "--ood", f"shapes={shapes_ood}", "--readme", readme,
               "--device", "cpu", "--quiet", check=True)
    return {"root": root, "md": (root / "docs" / "autodecoders.md").read_text(), "readme": readme.read_text(),
            "stdout": proc.stdout}


def tolerance(text: str) -> float:
    """Half a unit in the last digit shown."""
    mant, _, exp = text.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exp) if exp else 0) * 1.001 + 1e-12


def same(text: str, value) -> bool:
    if text == "–":
        return value is None or value != value  # missing or NaN
    return value is not None and abs(float(text) - value) <= tolerance(text)


def tables(md: str) -> list[tuple[dict, list[list[str]]]]:
    """Each Markdown table with the attributes of the ``<!-- table ... -->`` comment right above it."""
    lines, out, k = md.splitlines(), [], 0
    while k < len(lines):
        if lines[k].startswith("|"):
            start = k
            while k < len(lines) and lines[k].startswith("|"):
                k += 1
            tag = TABLE_TAG.fullmatch(lines[start - 1].strip()) if start else None
            assert tag, f"table without a source comment: {lines[start]}"
            attrs = dict(kv.split("=", 1) for kv in tag.group(1).split())
            rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[start:k]]
            out.append((attrs, rows[2:]))  # header and rule dropped
        k += 1
    return out


def check_tables(md: str, folder: Path) -> int:
    """Raise AssertionError unless every number in every table of ``md`` (a file in ``folder``) comes from the
    results.json its comment names. Returns the number of cells checked."""
    checked = 0
    for attrs, rows in tables(md):
        if attrs.get("kind") == "prose":
            continue
        res = json.loads((folder / attrs["source"]).read_text())
        for row in rows:
            if attrs["kind"] == "section":
                sec = res["sections"][attrs["section"]]
                name, mode = row[0].split(" (", 1)
                m = sec["methods"][name]
                if m["mode"] != mode.rstrip(")"):  # the encoder's code refined (compare's "refined")
                    m = sec["refined"][name]
                    assert m["mode"] == mode.rstrip(")"), row
                st = m["stats"]["all"]
                assert int(row[1].split()[0]) == st["shapes"], row
                for col, cell in zip(attrs["columns"].split(","), row[2:], strict=True):
                    m = SECTION_CELL.match(cell)
                    s = st.get(col)
                    if cell == "–":
                        assert s is None, (row, col)
                        continue
                    assert m, f"unparsable cell {cell!r}"
                    want = (s["mean"], s["median"], *s["ci95"])
                    assert all(same(t, v) for t, v in zip(m.groups(), want, strict=True)), (cell, want, col)
                    checked += 1
            elif attrs["kind"] == "headline":
                sec = res["sections"][row[0]]
                for name, cell in zip(attrs["methods"].split(","), row[1:], strict=False):
                    s = sec["methods"][name]["stats"]["all"].get(attrs["metric"])
                    if cell == "–":
                        assert s is None, (row, name)
                        continue
                    m = HEADLINE_CELL.match(cell)
                    assert m, f"unparsable cell {cell!r}"
                    assert all(same(t, v)
                               for t, v in zip(m.groups(), (s["mean"], *s["ci95"]), strict=True)), cell
                    checked += 1
            elif attrs["kind"] == "methods":
                m = res["methods"][row[0]]
                assert (row[1], int(row[2]), int(row[3]), int(row[4])) == (
                    m["latent_source"], m["seeds"], m["parameters"]["decoder"],
                    m["parameters"]["latent"]), row
                assert (same(row[5], m["train_seconds_mean"])
                        and same(row[6], m["inference_seconds_per_shape"])), row
                checked += 1
            elif attrs["kind"] == "budget":
                m = res["methods"].get(row[0])
                if m is None:  # the published setup's row (DeepSDF): from its preset, not this run
                    assert row[0].startswith("DeepSDF") and int(row[2].replace(",", "")) > 10**6, row
                    continue
                assert (int(row[1]), int(row[2].replace(",", "")), int(row[3].replace(",", ""))) == (
                    res["fair"]["train shapes"], m["parameters"]["decoder"], m["parameters"]["latent"]), row
                assert same(row[8].split()[0], m["train_seconds_mean"] / 60), row
                checked += 1
            elif attrs["kind"] == "published":
                from deepsdf_ad.published import PUBLISHED, comparison_rows

                names = list(res["methods"])
                want = comparison_rows(res["sections"], names)
                k = [i for i, p in enumerate(PUBLISHED) if (p.where, p.statistic) == (row[1], row[5])
                     and same(row[6], p.value)]
                assert k, f"no published number {row[1]} {row[5]} {row[6]}"
                w = next(want[i] for i in k if want[i]["published"].data == row[3])
                for n, cell in zip(names, row[7:], strict=True):
                    if cell == "–":
                        assert w["ours"][n] is None, (row, n)
                        continue
                    value, ratio = re.match(rf"^{NUMBER} \({NUMBER}×", cell).groups()
                    assert same(value, w["ours"][n]) and same(ratio, w["ratio"][n]), (cell, w)
                    checked += 1
            else:
                raise AssertionError(f"unknown table kind {attrs}")
    return checked


def test_each_experiment_names_the_code_that_ran_it(article):
    # the build writes the commit of --repo beside each experiment's results; --reuse shows it
    ran = re.findall(r"The code that ran it: (commit [0-9a-f]+|a checkout)", article["md"])
    assert len(ran) == 2, ran  # digits and shapes ran; scenes not selected


def test_article_figures_exist(article):
    docs = article["root"] / "docs"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", article["md"])
    assert len(links) >= 12  # per experiment: 4 sections, generation, slices, curves
    for link in links:
        p = docs / link
        assert p.is_file() and p.suffix == ".png", link
        assert 500 < p.stat().st_size < 400_000, (link, p.stat().st_size)
    # and nothing stale beside them
    assert {p.name for p in (docs / "images" / "article").iterdir()} == {Path(x).name for x in links}
    # every figure is labelled with the command that made it
    for caption in re.findall(r"^\*Figure \d+:.*$", article["md"], flags=re.M):
        assert ("deepsdf-ad experiment" in caption or "deepsdf-ad slice" in caption
                or "deepsdf_ad/viz/diagram.py" in caption
                or "benchmarks/bench_quality.py" in caption), caption
    # the quality curve of the quality benchmark is repeated, named as measured outside the build
    assert any("quality_curve.png" in x for x in links)
    assert any("methods_diagram" in link for link in links)  # the diagram of the two methods
    assert any("code_optimisation" in link for link in links)  # the test-time optimisation's loss


def test_article_tables_come_from_the_run_files(article):
    md = article["md"]
    docs = article["root"] / "docs"
    assert check_tables(md, docs) >= 30
    assert "{{" not in md and "}}" not in md
    for name in ("digits", "shapes"):  # the kept copy is the run's results.json
        assert f"kind=section source=article/results/{name}.json" in md
        assert (json.loads((docs / "article" / "results" / f"{name}.json").read_text())
                == json.loads((article["root"] / "work" / name / "report" / "results.json").read_text()))
    # a number typed by hand (or stale) is caught
    tampered = re.sub(r"(\| autodecoder \(optimise\) \| \d+ \| )(-?[0-9.]+)",
                      lambda m: m.group(1) + "0.987654", md, count=1)
    assert tampered != md
    with pytest.raises(AssertionError):
        check_tables(tampered, docs)


def test_the_article_measures_the_amortisation_gap(article):
    """The completion sections refine each encoder's codes (encode+refine) and say what that changed, in the
    objective and in the outcome, with the paired test."""
    md = article["md"]
    assert md.count("| autoencoder (encode+refine) |") == 2  # digits and shapes, completion
    assert md.count("Amortisation gap of autoencoder (Cremer et al.") == 2
    assert "Refined against autoencoder (encode): " in md and "Refined against autodecoder (optimise): " in md


def test_article_says_where_evidence_is_weak_and_what_was_not_run(article):
    md = article["md"]
    assert "Quick mode" in md
    assert "distinct shapes per method and section (each measured by" in md and "the intervals are wide" in md
    assert "not a clear difference" in md or "a clear difference" in md
    # scenes was not selected: its section says so instead of failing the build
    assert "**Not run in this build:**" in md
    assert "scenes: " in article["stdout"]


def test_readme_headline_block_is_rewritten(article):
    text = article["readme"]
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    block = text[text.index(HEADLINE_BEGIN):text.index(HEADLINE_END)]
    assert "old table" not in block and "docs/autodecoders.md" in block
    # 4 sections x 2 methods of the digits experiment at least
    assert check_tables(block, article["root"]) >= 8


def test_committed_article_matches_its_results():
    # docs/autodecoders.md and the README's headline block, as committed, against the results kept beside them
    article = REPO / "docs" / "autodecoders.md"
    if not article.is_file():
        pytest.skip("docs/autodecoders.md not generated yet (make article)")
    assert check_tables(article.read_text(), article.parent) >= 40
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", article.read_text()):
        assert (article.parent / link).is_file(), link
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index(HEADLINE_BEGIN):readme.index(HEADLINE_END)]
    assert check_tables(block, REPO) >= 8


def test_reuse_names_the_data_folders_given(article, tmp_path):
    """``--reuse`` of results whose build did not record its commands (they are rebuilt from the recipe) with
    ``--data`` / ``--ood`` says which folders were given, also for results measured without
    out-of-distribution shapes."""
    import shutil

    from deepsdf_ad.article import RUN_INFO

    work = tmp_path / "work"
    shutil.copytree(article["root"] / "work", work)
    (work / "shapes" / RUN_INFO).unlink()
    results = work / "shapes" / "report" / "results.json"
    res = json.loads(results.read_text())
    res.pop("ood", None)
    results.write_text(json.dumps(res))
    given = article["root"] / "shapes_ood" / "data"
    build_article(BuildOptions(quick=True, work=work, out=tmp_path / "docs", only=["shapes"], reuse=True,
                               data={"shapes": article["root"] / "shapes" / "data"}, ood={"shapes": given},
                               device="cpu"))
    md = (tmp_path / "docs" / "autodecoders.md").read_text()
    assert "was given with `--ood`" in md and "was given with `--data`" in md


def test_article_bad_data_flag_is_one_line(tmp_path):
    proc = cli("article", "--help")
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--reuse" in proc.stdout
    proc = cli("article", "--quick", "--work", tmp_path, "--data", "digits")
    assert_one_line_error(proc, "--data digits", "NAME=DIR")
    with pytest.raises(DataError, match="unknown article experiment 'nosuch'; known: digits, shapes"):
        build_article(BuildOptions(quick=True, work=tmp_path, out=tmp_path / "docs", only=["nosuch"]))
    assert not (tmp_path / "docs").exists()


def test_the_checkout_is_found_from_the_current_folder_or_given(tmp_path, monkeypatch):
    from deepsdf_ad.article import find_repo

    assert find_repo(REPO) == REPO.resolve()
    monkeypatch.chdir(REPO / "docs")
    assert find_repo() == REPO.resolve()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="not in a deepsdf-ad checkout"):
        build_article(BuildOptions(quick=True, work=tmp_path / "work", out=tmp_path / "docs"))
    with pytest.raises(DataError, match="not a deepsdf-ad checkout"):
        find_repo(tmp_path)
    assert not (tmp_path / "docs").exists() and not (tmp_path / "work").exists()


def _section(a_values, b_values, metric="chamfer_x1e3"):
    def method(values):
        v = np.asarray(values, float)
        return {"stats": {"all": {metric: {"mean": float(v.mean()), "median": float(np.median(v)),
                                           "ci95": [float(v.min()), float(v.max())]}, "shapes": len(v)}},
                "shapes": [{"key": f"s{i}", "seed": 0, metric: float(x)} for i, x in enumerate(v)]}

    return {"methods": {"a": method(a_values), "b": method(b_values)}}


def test_clear_only_from_a_paired_test_over_ten_shapes():
    from deepsdf_ad.evidence import clear_winner, verdict

    rng = np.random.default_rng(0)
    b = rng.uniform(5, 10, 12)
    many = _section(b - 2.0 - rng.uniform(0, 0.5, 12), b)  # a lower on every one of 12 shapes
    text = verdict(many, "chamfer_x1e3")
    assert "a clear difference (Wilcoxon signed-rank, paired by shape, n = 12" in text
    assert clear_winner(many, "chamfer_x1e3") == "a"
    few = _section(b[:5] - 50.0, b[:5])  # intervals far apart, but 5 shapes
    text = verdict(few, "chamfer_x1e3")
    assert "clear difference" not in text and "no verdict" in text
    assert clear_winner(few, "chamfer_x1e3") is None
    mixed = _section(b + rng.normal(0, 1, 12), b)
    text = verdict(mixed, "chamfer_x1e3")
    assert "not a clear difference (Wilcoxon signed-rank, paired by shape, n = 12" in text
    # three seeds of 4 shapes are 4 shapes, not 12 pairs: no verdict, whatever the seeds agree on
    seeded = _section(b - 2.0, b)
    for m, off in (("a", -2.0), ("b", 0.0)):
        seeded["methods"][m]["shapes"] = [{"key": f"s{i}", "seed": k, "chamfer_x1e3": float(b[i] + off + k)}
                                          for i in range(4) for k in range(3)]
    text = verdict(seeded, "chamfer_x1e3")
    assert "clear difference" not in text and "4 paired shapes, fewer than 10: no verdict" in text
    seeded12 = _section(b - 2.0, b)
    for m, off in (("a", -2.0), ("b", 0.0)):
        seeded12["methods"][m]["shapes"] = [{"key": f"s{i}", "seed": k, "chamfer_x1e3": float(b[i] + off + k)}
                                            for i in range(12) for k in range(3)]
    assert ("a clear difference (Wilcoxon signed-rank, paired by shape (each shape's difference averaged "
            "over 3 seeds), n = 12") in verdict(seeded12, "chamfer_x1e3")


def test_seed_spread_is_each_seeds_mean():
    from deepsdf_ad.evidence import seed_spread

    sec = _section([1.0, 2.0], [3.0, 4.0])
    assert seed_spread(sec, "chamfer_x1e3") == ""  # one seed
    runs = [[1.0, 3.0], [4.0, 6.0]]  # two seeds of two shapes
    sec["methods"]["a"]["shapes"] = [{"key": f"s{i}", "seed": k, "chamfer_x1e3": v}
                                     for k, vals in enumerate(runs) for i, v in enumerate(vals)]
    assert seed_spread(sec, "chamfer_x1e3") == ("Between training runs: the mean chamfer ×10³ of each seed, "
                                                "a 2, 5 (spread 3).")


def test_the_build_reports_the_spread_between_seeds(article):
    assert "Between training runs: the mean IoU of each seed, autodecoder " in article["md"]


def test_no_clear_verdict_on_fewer_than_ten_shapes_in_the_build(article):
    # the quick build measures 1-3 shapes per section: every "clear" is a negation or comes with its test
    md = article["md"]
    for m in re.finditer(r"[^.|]*\bclear\b[^.|]*", md):
        sentence = m.group(0)
        if re.search(r"\bnot (a )?clear\b|Not clear|no verdict|called \*clear\*|\"clear\"", sentence):
            continue
        found = re.search(r"n = (\d+)", sentence)
        assert "Wilcoxon" in sentence and found and int(found.group(1)) >= 10, sentence


def test_the_article_sets_its_numbers_beside_the_published_ones(article):
    # the quick build's shapes experiment: a budget table and the published numbers beside its own, each
    # traced to its results.json by check_tables (above); the codes drawn; a generated conclusion
    md = article["md"]
    assert "kind=budget source=article/results/shapes.json" in md
    assert "kind=published source=article/results/shapes.json" in md
    assert "| DeepSDF, published" in md and "Park et al., DeepSDF, CVPR 2019" in md
    assert "shapes_code_projection.png" in md and "spread across shapes" in md
    conclusion = md[md.index("## 6. Conclusion"):md.index("## 7. Reproducing")]
    assert "MNIST digits (2D fields)" in conclusion
    assert "Finding a code and meshing took per held-out shape" in conclusion


def test_published_numbers_are_in_metrics_this_toolkit_measures():
    from deepsdf_ad.published import PAPERS, PUBLISHED, TO_PAPER_UNITS, UNITS, comparison_rows, in_paper_units

    for p in PUBLISHED:
        assert p.paper in PAPERS and p.metric in TO_PAPER_UNITS and p.metric in UNITS, p
        assert p.task in ("representation", "reconstruction", "completion"), p
        assert p.statistic in ("mean", "median"), p
    assert in_paper_units("chamfer_l1", 0.0079) == pytest.approx(0.079)  # ONet's unit: a tenth of the side
    with pytest.raises(KeyError):
        in_paper_units("fscore", 0.5)
    sections = {"reconstruction": {"methods": {"ad": {"stats": {"all": {
        "shapes": 12, "chamfer_x1e3": {"mean": 2.04, "median": 0.72}, "chamfer_l1": {"mean": 0.0158}}}}}}}
    rows = {(r["published"].paper, r["published"].task, r["published"].metric, r["published"].statistic): r
            for r in comparison_rows(sections, ["ad", "ae"])}
    r = rows[("DeepSDF", "reconstruction", "chamfer_x1e3", "median")]
    assert r["ours"] == {"ad": 0.72, "ae": None} and r["ratio"]["ad"] == pytest.approx(10.0)
    assert r["shapes"]["ad"] == 12
    assert rows[("ONet", "reconstruction", "chamfer_l1", "mean")]["ratio"]["ad"] == pytest.approx(2.0)
    assert rows[("DeepSDF", "representation", "chamfer_x1e3", "mean")]["ours"]["ad"] is None  # not measured
    assert rows[("ONet", "reconstruction", "iou", "mean")]["ours"]["ad"] is None


def test_code_projection_shows_a_collapse():
    from deepsdf_ad.codes import project_2d, spread_ratio

    rng = np.random.default_rng(0)
    common = rng.normal(size=16) * 3
    spread = common + 3 * rng.normal(size=(30, 16))
    collapsed = common + 0.01 * rng.normal(size=(30, 16))
    assert spread_ratio(collapsed) < 0.05 < 1.0 < spread_ratio(spread)
    p_spread, share = project_2d(spread)
    p_collapsed, _ = project_2d(collapsed)
    assert p_spread.shape == (30, 2) and 0 < share <= 1
    # on the one scale (each set's RMS norm) the collapsed codes shrink to a dot, the others do not
    assert np.abs(p_collapsed).max() < 0.02 < 0.2 < np.abs(p_spread).max()


def test_the_experiments_progress_goes_to_its_log_unless_the_build_is_quiet():
    from deepsdf_ad.article import BuildOptions, experiment_args

    loud = experiment_args(Path("p.yaml"), Path("d"), Path("o"), Path("out"),
                           BuildOptions(overrides=["train.epochs=2"], device="cpu"))
    assert loud == ["experiment", "p.yaml", "--data", "d", "--ood", "o", "--out", "out", "--device", "cpu",
                    "--set", "train.epochs=2"]
    quiet = experiment_args(Path("p.yaml"), Path("d"), None, Path("out"), BuildOptions(progress=False))
    assert "--quiet" in quiet and "--ood" not in quiet


def test_failures_are_counted_by_seed_and_a_broken_run_is_named():
    from deepsdf_ad.evidence import failure_sentence

    failed = {"failed": "no surface"}
    shapes = [{"key": f"s{i}", "seed": k, **(failed if k == 2 or (k == 0 and i == 0) else {})}
              for k in range(3) for i in range(10)]
    m = {"stats": {"all": {"shapes": 30, "failed": 11}}, "shapes": shapes}
    text = failure_sentence("grid_autoencoder (encode)", m)
    assert text.startswith("grid_autoencoder (encode): 11 of 30 shapes failed")
    assert "seed 0: 1 of 10, seed 1: 0 of 10, seed 2: 10 of 10" in text
    assert "Every shape of seed 2 failed" in text and "seed 0 failed" not in text
    # one run: no breakdown, no verdict on the run
    one = failure_sentence("x (optimise)", {"stats": {"all": {"shapes": 10, "failed": 10}},
                                             "shapes": [r for r in shapes if r["seed"] == 2]})
    assert "By seed" not in one and "broken" not in one


def test_a_run_that_did_not_learn_is_named(tmp_path):
    from deepsdf_ad.article import stalled_runs

    runs = []
    for k, losses in enumerate(([0.05 * 0.9**e for e in range(12)], [0.0854] * 12)):
        (tmp_path / f"seed_{k}").mkdir()
        rows = [json.dumps({"epoch": e + 1, "loss": v, "sdf_loss": v}) for e, v in enumerate(losses)]
        (tmp_path / f"seed_{k}" / "metrics.jsonl").write_text("\n".join(rows) + "\n")
        runs.append(str(tmp_path / f"seed_{k}"))
    out = stalled_runs({"methods": {"grid_autoencoder": {"runs": [*runs, str(tmp_path / "gone")]}}})
    assert len(out) == 1 and out[0].startswith("grid_autoencoder, seed 1 (") and "did not learn" in out[0]


def test_small_figures_keep_the_colours_of_thin_lines(tmp_path):
    # a training-curve figure in miniature: large green areas, a few pixels of each of three blues
    from PIL import Image

    from deepsdf_ad.article import save_small

    rng = np.random.default_rng(0)
    img = np.full((300, 600, 3), 255, np.uint8)
    # thousands of greens over a large area (antialiased curves of one method), more than a palette holds
    img[100:300, :] = np.stack([rng.integers(20, 90, (200, 600)), rng.integers(110, 230, (200, 600)),
                                rng.integers(50, 120, (200, 600))], axis=-1)
    blues = [(8, 48, 107), (33, 113, 181), (107, 174, 214)]
    for k, c in enumerate(blues):
        img[10 + 4 * k, 500:560] = c
    Image.fromarray(img).save(tmp_path / "src.png")
    out = np.asarray(Image.open(save_small(tmp_path / "src.png", tmp_path / "small.png")).convert("RGB"))
    for k, c in enumerate(blues):
        assert np.abs(out[10 + 4 * k, 530].astype(int) - c).sum() < 30, (c, out[10 + 4 * k, 530])


def test_reuse_never_starts_a_build(article, tmp_path):
    """``--reuse`` renders what exists; an experiment without results is reported as not measured (nothing is
    prepared or trained: an article build of the shapes takes hours)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(article["root"] / "work" / "digits", work / "digits")  # shapes: nothing to reuse
    summary = build_article(BuildOptions(quick=True, work=work, out=tmp_path / "docs",
                                         only=["digits", "shapes"], reuse=True, device="cpu"))
    assert not (work / "shapes").exists() and not (work / "data").exists() and not (work / "logs").exists()
    md = (tmp_path / "docs" / "autodecoders.md").read_text()
    assert "shapes: no results to reuse" in md and "digits: outputs of an earlier build reused" in md
    assert "no results to reuse (`" in md and "build it without `--reuse`" in md
    assert summary is not None


def test_a_refined_code_can_be_the_sections_winner(tmp_path):
    """compare's encode+refine rows compete in the readings and the conclusion: in the scenes build they beat
    every other way of finding a code on completion, which a conclusion over the plain methods never said."""
    from types import SimpleNamespace

    from deepsdf_ad.article import Renderer
    from deepsdf_ad.evidence import clear_winner, with_refined

    rng = np.random.default_rng(1)
    b = rng.uniform(5, 10, 12)
    sec = _section(b - 2.0 - rng.uniform(0, 0.5, 12), b)  # a (optimise) beats b (encode) on every shape
    refined = _section(b - 4.0 - rng.uniform(0, 0.5, 12), b)["methods"]["a"]  # b refined beats both
    sec["methods"]["a"]["mode"], sec["methods"]["b"]["mode"] = "optimise", "encode"
    sec["refined"] = {"b": {**refined, "mode": "encode+refine"}}
    assert clear_winner(sec, "chamfer_x1e3") == "a"
    assert clear_winner(with_refined(sec), "chamfer_x1e3") == "b (encode+refine)"
    assert set(sec["methods"]) == {"a", "b"}  # the section itself is left as it was
    results = {"dim": 3, "sections": {"completion": sec},
               "methods": {"a": {"inference_seconds_per_shape": 3.0},
                           "b": {"inference_seconds_per_shape": 0.1}}}
    oc = SimpleNamespace(ok=True, results=results, exp=SimpleNamespace(title="Shapes"))
    text = "\n".join(Renderer({"shapes": oc}, SimpleNamespace(out=tmp_path, repo=None), 0.0).conclusion())
    assert ("completion from partial observations: **b (encode+refine)** (paired Wilcoxon over 12 shapes, "
            "p <") in text
    # the unit of the test is the shape, not the shape-seed record ("over 720 shapes" for 240 × 3 seeds)
    from deepsdf_ad.evidence import shapes_and_seeds

    recs = [{"key": k, "seed": sd} for k in "ab" for sd in range(3)]
    assert shapes_and_seeds([{"shapes": recs}, {"shapes": recs}]) == "2 shapes × 3 seeds"
    assert "Finding a code and meshing took per held-out shape: a 3 s, b 0.1 s." in text


def test_a_surprise_needs_intervals_apart():
    """Training shapes worse than held-out ones is noted only where the two means' intervals do not overlap
    (the scenes autoencoder's 39.8 [24.3, 57] against 39.1 [25.8, 54.4] was once called surprising), and an
    autodecoder's explanation covers grids of codes as well as tables."""
    from deepsdf_ad.evidence import surprises

    def stats(mean, low, high):
        return {"stats": {"all": {"chamfer_x1e3": {"mean": mean, "median": mean, "ci95": [low, high]},
                                  "shapes": 10}}}

    results = {"fair": {"train.epochs": 150},
               "methods": {"grid_ad": {"latent_source": "grid"},
                           "grid_ae": {"latent_source": "pointnet_grid"}},
               "sections": {"representation": {"methods": {"grid_ad": stats(6.24, 2.69, 11.8),
                                                           "grid_ae": stats(39.8, 24.3, 57.0)}},
                            "reconstruction": {"methods": {"grid_ad": stats(1.55, 1.15, 1.99),
                                                           "grid_ae": stats(39.1, 25.8, 54.4)}}}}
    notes = surprises(results, "chamfer_x1e3", lambda name: 300)
    assert len(notes) == 1 and notes[0].startswith("Surprising: grid_ad scores its training shapes worse")
    assert "(150 times in all), while a held-out code gets 300 optimisation steps" in notes[0]
    results["sections"]["reconstruction"]["methods"]["grid_ad"] = stats(1.55, 1.15, 3.0)  # overlaps now
    assert surprises(results, "chamfer_x1e3", lambda name: None) == []


def test_the_build_runs_the_code_of_repo_from_any_folder(tmp_path, monkeypatch):
    """``--repo`` names the code a build runs: from a folder holding another checkout (here this one, the
    tests' folder), ``python -m deepsdf_ad`` with REPO on PYTHONPATH ran the current folder's code instead,
    and the article named REPO's commit for it."""
    from deepsdf_ad.article import _run_cli

    stub = tmp_path / "other" / "deepsdf_ad"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "__main__.py").write_text("import sys\nprint('stub checkout ran', sys.argv[1:])\n")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # a folder with this checkout's deepsdf_ad in it
    assert Path("deepsdf_ad/__main__.py").is_file()
    log = tmp_path / "log.txt"
    _run_cli(["prep", "x"], log, "stub", tmp_path / "other")
    assert "stub checkout ran ['prep', 'x']" in log.read_text()


def test_a_figure_says_when_its_seed_is_not_typical():
    """The section figures show each method's first seed; the scenes grid autoencoder's first seed was its
    worst of 3 by far (90.3 against 17.9 and 12.9), and its panels looked like the method's."""
    from deepsdf_ad.evidence import shown_seed_note

    def method(per_seed):
        return {"shapes": [{"key": f"s{i}", "seed": k, "chamfer_x1e3": v + 0.1 * i}
                           for k, v in enumerate(per_seed) for i in range(3)]}

    sec = {"methods": {"ae": method([90.0, 18.0, 13.0]), "ad": method([10.0, 9.5, 8.5]),
                       "lucky": method([1.0, 9.0, 10.0])}}
    note = shown_seed_note(sec, "chamfer_x1e3")
    assert note.startswith("The seed shown, by the mean chamfer ×10³ of this section: ae's is its worst of 3 "
                           "(90.1; the others 18.1, 13.1)")
    assert "lucky's is its best of 3" in note and "ad's" not in note
    assert shown_seed_note({"methods": {"ad": method([10.0, 9.5, 8.5])}}, "chamfer_x1e3") == ""
