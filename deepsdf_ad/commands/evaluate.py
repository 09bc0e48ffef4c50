"""``deepsdf-ad eval``: a run and a data folder's split -> per-shape and summary metrics."""

from __future__ import annotations

from deepsdf_ad.commands.common import add_device, add_quiet, add_resolution, not_inputs, positive_int, seed


def add_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="reconstruct a split's shapes, mesh them and measure them",
                        description="Reconstruct every shape of DATA's split with RUN (optimise or encode), "
                                    "mesh it and write per-shape and summary metrics (chamfer x1e3, "
                                    "chamfer-L1, F-score, normal consistency, IoU; IoU and near-contour "
                                    "error for digits).")
    ev.add_argument("--run", required=True, help="trained run folder")
    ev.add_argument("--data", required=True, metavar="DATA", help="data folder")
    ev.add_argument("--split", choices=("test", "train"), default="test",
                    help="shapes to evaluate (default test)")
    ev.add_argument("--input", choices=("full", "scan"), default="full",
                    help="full: SDF samples / surface points; scan: a partial view (DATA/scans; half a "
                         "contour in 2D)")
    ev.add_argument("--out", metavar="EVAL.json", help="write per-shape and summary metrics here")
    ev.add_argument("--mode", choices=("optimise", "encode", "encode+refine"),
                    help="how codes are found (default: optimise for autodecoder runs, encode for "
                         "autoencoder runs)")
    add_resolution(ev)
    ev.add_argument("--limit", type=positive_int, metavar="N", help="at most N shapes per category")
    ev.add_argument("--seed", type=seed, default=0, help="random seed")
    add_quiet(ev)
    add_device(ev)
    ev.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from deepsdf_ad.evaluate import EvalOptions, evaluate_run, write_eval

    not_inputs(args.out, runs=[args.run], data=[args.data])
    opts = EvalOptions(split=args.split, input=args.input, mode=args.mode, resolution=args.resolution,
                       limit=args.limit, seed=args.seed)
    result = evaluate_run(args.run, args.data, opts, device=args.device, progress=not args.quiet)
    s = result["summary"]["all"]
    parts = [f"{k} mean {s[k]['mean']:.4g} median {s[k]['median']:.4g}" for k in result["metrics"] if k in s]
    print(f"eval: {s['shapes']} {args.split} shapes ({args.input}, mode {result['mode']}), "
          f"{s['failed']} failed; " + "; ".join(parts))
    if args.out:
        print(f"eval: per-shape and summary metrics -> {write_eval(result, args.out)}")
    return 0
