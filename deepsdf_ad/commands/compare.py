"""``deepsdf-ad compare|experiment|article``: several runs measured on the same shapes, written as a report;
an experiment preset trained and compared; the article's experiments rerun and the article rebuilt."""

from __future__ import annotations

from pathlib import Path

from deepsdf_ad.commands.common import (
    add_device,
    add_quiet,
    add_resolution,
    name_dirs,
    not_inputs,
    positive_int,
)


def add_parsers(sub) -> None:
    _add_compare(sub)
    _add_experiment(sub)
    _add_article(sub)


def _add_compare(sub) -> None:
    co = sub.add_parser("compare", help="measure several runs on the same shapes; write a report",
                        description="Evaluate each RUN (a run folder or a folder of seed_K runs, pooled) on "
                                    "DATA: representation, held-out reconstruction, completion from partial "
                                    "views, out-of-distribution (--ood), generation, training curves; write "
                                    "REPORT_DIR/report.md and report.html. Refuses runs that differ in data, "
                                    "decoder, code length, samples per step or epochs.")
    co.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or folders of seed_K runs)")
    co.add_argument("--data", required=True, metavar="DATA", help="the data folder the runs were trained on")
    co.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report")
    co.add_argument("--ood", metavar="DATA2",
                    help="data folder of out-of-distribution shapes (its test split)")
    co.add_argument("--limit", type=positive_int, metavar="N",
                    help="at most N shapes per category per section")
    co.add_argument("--train-limit", type=positive_int, metavar="N",
                    help="at most N training shapes per category in the representation section (default: "
                         "--limit)")
    co.add_argument("--refine", nargs="*", metavar="SECTION",
                    help="sections in which each autoencoder is also measured with its codes refined by "
                         "optimisation (encode+refine: the amortisation gap, in the objective and in the "
                         "metrics): representation, reconstruction, completion, ood; --refine alone: none "
                         "(default: completion)")
    add_resolution(co)
    add_quiet(co)
    add_device(co)
    co.set_defaults(func=run_compare)


def _add_experiment(sub) -> None:
    ex = sub.add_parser("experiment", help="train every method of an experiment preset, then compare them",
                        description="Train each method of EXP.yaml (configs/experiments/) on DATA, one run "
                                    "per seed, into DIR/runs, and write the comparison to DIR/report. "
                                    "Running it again resumes.")
    ex.add_argument("experiment", metavar="EXP.yaml",
                    help="experiment preset, e.g. configs/experiments/ad_vs_ae_digits.yaml")
    ex.add_argument("--data", required=True, metavar="DATA", help="data folder")
    ex.add_argument("--out", required=True, metavar="DIR", help="folder for runs and report")
    ex.add_argument("--ood", metavar="DATA2", help="data folder of out-of-distribution shapes")
    ex.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every method (repeatable)")
    add_quiet(ex)
    add_device(ex)
    ex.set_defaults(func=run_experiment)


def _add_article(sub) -> None:
    ar = sub.add_parser("article", help="rerun the experiment presets and regenerate docs/autodecoders.md",
                        description="Prepare the data and run every experiment preset the article reports "
                                    "(deepsdf_ad/article.py: EXPERIMENTS) into WORK, then fill docs/article/"
                                    "autodecoders.md.in with their tables and figures: OUT/autodecoders.md "
                                    "and OUT/images/article/. --quick: CI-sized data and training (a minute "
                                    "or two).")
    ar.add_argument("--quick", action="store_true", help="CI-sized run: numbers check the machinery only")
    ar.add_argument("--out", metavar="DIR",
                    help="folder of the article (default: docs; with --quick: WORK/docs)")
    ar.add_argument("--work", metavar="DIR", help="folder for data, runs and reports (default: article_out; "
                                                   "with --quick: article_quick)")
    ar.add_argument("--shared", metavar="DIR", help="the shared data (meshes/, mnist/; default: "
                                                    "../shared/data beside the repository)")
    ar.add_argument("--repo", metavar="DIR", help="the repository's root folder, whose presets, template and "
                                                  "code the build uses (default: the current folder or the "
                                                  "nearest one above it that is a checkout)")
    ar.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                    help="use this data folder for experiment NAME instead of preparing it (repeatable)")
    ar.add_argument("--ood", action="append", default=[], metavar="NAME=DIR",
                    help="out-of-distribution data folder for experiment NAME (repeatable)")
    ar.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments (the others are "
                                                               "reported as not run)")
    ar.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every method of the experiments run (a reduced run; the "
                         "article shows it in the commands)")
    ar.add_argument("--max-meshes", type=positive_int, metavar="N",
                    help="at most N meshes per category in the mesh experiments (a reduced run; the article "
                         "says so)")
    ar.add_argument("--reuse", action="store_true", help="reuse experiments whose "
                                                         "WORK/NAME/report/results.json exists (no prep, no "
                                                         "training): re-render the article")
    ar.add_argument("--readme", metavar="README.md", help="also rewrite the headline block of this README")
    add_quiet(ar, help="print only the summary line")
    add_device(ar)
    ar.set_defaults(func=run_article)


def _compare_options(args, base=None):
    from dataclasses import replace

    from deepsdf_ad.compare import CompareOptions

    opts = base or CompareOptions()
    changes = {k: getattr(args, k) for k in ("limit", "train_limit", "resolution", "refine")
               if getattr(args, k, None) is not None}
    return replace(opts, **changes)


def _print_report(results: dict, report_dir) -> None:
    rec = results["sections"].get("reconstruction")
    if rec:
        for name, m in rec["methods"].items():
            st = m["stats"]["all"]
            parts = [f"{k} {st[k]['mean']:.4g}"
                     for k in ("chamfer_x1e3", "fscore", "iou", "near_contour_error")
                     if st.get(k)]
            print(f"  held-out {name} ({m['mode']}): " + ", ".join(parts))
    for sec, sr in results["sections"].items():
        for name, r in sr.get("refined", {}).items():
            obj = r.get("objective")
            if obj:
                print(f"  {sec}: {name} amortisation gap (objective, median over {obj['shapes']} shapes): "
                      f"{obj['encoded']['median']:.4g} encoded -> {obj['refined']['median']:.4g} refined")
    print(f"report -> {Path(report_dir) / 'report.md'} and report.html ({results['seconds']} s)")


def run_compare(args) -> int:
    from deepsdf_ad.compare import compare
    from deepsdf_ad.viz.report import write_report

    not_inputs(args.out, runs=args.runs, data=[args.data, args.ood])
    results = compare(args.runs, args.data, args.out, ood=args.ood, opts=_compare_options(args),
                      device=args.device, progress=not args.quiet, report=write_report)
    _print_report(results, args.out)
    return 0


def run_experiment(args) -> int:
    from deepsdf_ad import experiment
    from deepsdf_ad.viz.report import write_report

    not_inputs(args.out, files=[args.experiment], data=[args.data, args.ood])
    results = experiment.run_experiment(args.experiment, args.data, args.out, ood=args.ood,
                                        overrides=args.set, device=args.device, progress=not args.quiet,
                                        report=write_report)
    _print_report(results, Path(args.out) / "report")
    print(f"experiment: {results['experiment_seconds']} s -> {args.out}")
    return 0


def run_article(args) -> int:
    data, ood = name_dirs(args.data, "--data"), name_dirs(args.ood, "--ood")
    from deepsdf_ad.article import BuildOptions, build_article

    work = Path(args.work or ("article_quick" if args.quick else "article_out"))
    opts = BuildOptions(quick=args.quick, work=work,
                        out=Path(args.out or (work / "docs" if args.quick else "docs")), data=data, ood=ood,
                        only=args.only, overrides=args.set, max_meshes=args.max_meshes, reuse=args.reuse,
                        device=args.device, readme=args.readme, progress=not args.quiet,
                        repo=Path(args.repo) if args.repo else None)
    if args.shared:
        opts.shared = Path(args.shared)
    info = build_article(opts)
    ran = ", ".join(f"{k}: {v}" for k, v in info["experiments"].items())
    print(f"article: {info['tables']} tables, {info['figures']} figures ({ran}) in {info['seconds']:.0f} s "
          f"-> {info['article']}")
    return 0
