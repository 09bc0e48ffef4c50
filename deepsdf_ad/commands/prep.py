"""``deepsdf-ad prep meshes|scenes|digits|merge|pack``: inputs on disk -> SDF samples in a data folder (and
the samples packed into a memory-mapped store).

Defaults that a config dataclass of ``data_prep`` also holds are read from it (:func:`field_default`).
"""

from __future__ import annotations

from pathlib import Path

from deepsdf_ad.commands.common import (
    UserError,
    add_force,
    add_quiet,
    add_shard,
    field_default,
    finite_float,
    fraction,
    nonnegative_int,
    not_inputs,
    objects_range,
    positive_float,
    positive_int,
    seed,
    shard_label,
    share,
    workers,
)


def add_parsers(sub) -> None:
    prep = sub.add_parser("prep", help="turn meshes (or digits) into SDF samples on disk")
    prep_sub = prep.add_subparsers(dest="kind", metavar="KIND", parser_class=type(prep))
    prep_sub.required = True
    _add_meshes(prep_sub)
    _add_scenes(prep_sub)
    _add_digits(prep_sub)
    _add_merge(prep_sub)
    _add_pack(prep_sub)


def _add_meshes(prep_sub) -> None:
    from deepsdf_ad.data_prep.params import PrepConfig, SamplingConfig

    pm = prep_sub.add_parser("meshes", help="sample signed distances from a folder of meshes",
                             description="Sample SDF points from every mesh below SRC (category = folder "
                                         "name, id = file stem) into DATA, in DeepSDF's format.")
    pm.add_argument("src", metavar="SRC", help="folder of meshes (.obj .off .ply .stl), searched recursively")
    pm.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    samples = field_default(SamplingConfig, "samples")
    pm.add_argument("--samples", type=positive_int, default=samples,
                    help=f"SDF samples per mesh (default {samples})")
    test = field_default(PrepConfig, "test_fraction")
    pm.add_argument("--test-fraction", type=share,
                    help=f"share of each category of SRC held out for test (default {test:g}; 0 with "
                         "--held-out; 1: every shape, e.g. a set measured out of distribution)")
    pm.add_argument("--held-out", metavar="DIR",
                    help="a second folder of meshes, every one of them a test shape (e.g. a benchmark's "
                         "test split; their scans with --scans); SRC's meshes are then all training shapes "
                         "unless --test-fraction says otherwise")
    pm.add_argument("--workers", type=positive_int, default=1, help="meshes processed in parallel")
    pm.add_argument("--seed", type=seed, default=field_default(PrepConfig, "seed"), help="random seed")
    variances = field_default(SamplingConfig, "variances")
    pm.add_argument("--variances", type=positive_float, nargs=2, default=variances, metavar=("V1", "V2"),
                    help="variances of the two near-surface noise levels (default "
                         f"{variances[0]:g} {variances[1]:g}, DeepSDF's)")
    uniform = field_default(SamplingConfig, "uniform_fraction")
    pm.add_argument("--uniform-fraction", type=fraction, default=uniform,
                    help=f"share of samples uniform in [-1,1]^3 (default {uniform:g} = 3/50)")
    pm.add_argument("--scans", type=nonnegative_int, default=field_default(PrepConfig, "scans"), metavar="K",
                    help="also write K partial scans per test shape to DATA/scans/<category>/<id>_<k>.ply")
    ambiguous = field_default(PrepConfig, "max_ambiguous")
    pm.add_argument("--max-ambiguous", type=fraction, default=ambiguous,
                    help="reject a mesh when more than this share of near-surface samples has an ambiguous "
                         f"sign (default {ambiguous:g})")
    pm.add_argument("--strict", action="store_true", help="exit with an error if any mesh failed")
    add_force(pm, "data")
    add_shard(pm)
    add_quiet(pm)
    pm.set_defaults(func=run_prep_meshes)


def _add_scenes(prep_sub) -> None:
    from deepsdf_ad.data_prep.params import SamplingConfig, SceneConfig

    ps = prep_sub.add_parser("scenes", help="compose scenes of several meshes and sample them",
                             description="Place 2-5 meshes of SRC (category = folder name) on the floor of a "
                                         "room, without overlaps, and sample each scene's signed distances "
                                         "into DATA (category 'scene'; scene meshes in DATA/scene_meshes). "
                                         "Test scenes are made only of test meshes.")
    ps.add_argument("src", metavar="SRC",
                    help="folder of meshes (.obj .off .ply .stl), one subfolder per category")
    ps.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    ps.add_argument("--scenes", required=True, type=positive_int, metavar="N",
                    help="scenes in total (train + test)")
    objects = field_default(SceneConfig, "objects")
    ps.add_argument("--objects", type=objects_range, default=objects, metavar="MIN-MAX",
                    help=f"objects per scene, uniform in MIN..MAX (default {objects[0]}-{objects[1]})")
    room = field_default(SceneConfig, "room_size")
    ps.add_argument("--room-size", type=positive_float, default=room, metavar="M",
                    help=f"side of the square room in metres (default {room:g}); objects have plausible "
                         "sizes in metres")
    gap = field_default(SceneConfig, "gap")
    ps.add_argument("--gap", type=finite_float, default=gap, metavar="M",
                    help=f"smallest distance between two objects' footprints, metres (default {gap:g})")
    samples = field_default(SamplingConfig, "samples")
    ps.add_argument("--samples", type=positive_int, default=samples,
                    help=f"SDF samples per scene (default {samples})")
    test = field_default(SceneConfig, "test_fraction")
    ps.add_argument("--test-fraction", type=fraction, default=test,
                    help="share of the meshes (per category) and of the scenes held out for test "
                         f"(default {test:g})")
    ps.add_argument("--scans", type=nonnegative_int, default=field_default(SceneConfig, "scans"), metavar="K",
                    help="also write K partial scans per test scene to DATA/scans/scene/<id>_<k>.ply")
    ps.add_argument("--max-ambiguous", type=fraction, default=field_default(SceneConfig, "max_ambiguous"),
                    help="leave out a mesh whose near-surface signs are ambiguous for more than this share")
    ps.add_argument("--workers", type=positive_int, default=1, help="meshes and scenes processed in parallel")
    add_force(ps, "data")
    ps.add_argument("--seed", type=seed, default=field_default(SceneConfig, "seed"), help="random seed")
    add_quiet(ps)
    ps.set_defaults(func=run_prep_scenes)


def _add_digits(prep_sub) -> None:
    from deepsdf_ad.data_prep.params import DigitSamplingConfig

    pd = prep_sub.add_parser("digits", help="MNIST digits as 2D signed-distance fields or heightfields",
                             description="Turn the digits of the MNIST IDX files in IDX_DIR into samples in "
                                         "DATA (category = label, id = <file prefix>-<index>, e.g. "
                                         "t10k-00042).")
    pd.add_argument("idx_dir", metavar="IDX_DIR",
                    help="folder of *-images-idx3-ubyte[.gz] + *-labels-idx1-ubyte[.gz]")
    pd.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    pd.add_argument("--labels", help="digits to keep, e.g. 0-4 or 1,3,7 (default all)")
    pd.add_argument("--limit", type=positive_int, help="at most N digits per IDX file (the first ones)")
    pd.add_argument("--test-fraction", type=fraction, default=0.2,
                    help="share of each label held out for test")
    pd.add_argument("--field", choices=("sdf", "height"), default=field_default(DigitSamplingConfig, "field"),
                    help="sdf: signed distance to the 0.5 contour; height: intensity (+ a 3D heightfield "
                         "solid)")
    samples = field_default(DigitSamplingConfig, "samples")
    pd.add_argument("--samples", type=positive_int, default=samples,
                    help=f"samples per digit (default {samples})")
    pd.add_argument("--seed", type=seed, default=0, help="random seed")
    add_force(pd, "data")
    pd.add_argument("--download", action="store_true",
                    help="first fetch the standard MNIST files into IDX_DIR (checked against their MD5)")
    add_shard(pd)
    add_quiet(pd)
    pd.set_defaults(func=run_prep_digits)


def _add_merge(prep_sub) -> None:
    pg = prep_sub.add_parser("merge", help="combine the shards of a sharded prep (--shard I/N) into DATA",
                             description="Check that DATA/shards holds every shard-I-of-N.json of one "
                                         "sharding, all finished with the same flags, then write DATA's "
                                         "splits and manifest.json (and --scans), as one unsharded run "
                                         "would.")
    pg.add_argument("data", metavar="DATA", help="data folder the shards wrote into")
    add_quiet(pg)
    pg.set_defaults(func=run_prep_merge)


def _add_pack(prep_sub) -> None:
    pk = prep_sub.add_parser("pack", help="pack DATA's training samples into a memory-mapped store",
                             description="Write DATA's training samples into DATA/store (two uncompressed "
                                         "float32 arrays, an index and a checksum manifest), which 'train' "
                                         "maps into memory instead of loading (train.sample_store). With a "
                                         "store already there: check it against its sources; --rebuild packs "
                                         "it again.")
    pk.add_argument("data", metavar="DATA", help="data folder (ours or DeepSDF's)")
    pk.add_argument("--split", help="split JSON of the training shapes (default DATA/splits/train.json)")
    pk.add_argument("--rebuild", action="store_true", help="pack again, replacing the store")
    add_quiet(pk)
    pk.set_defaults(func=run_prep_pack)


def run_prep_meshes(args) -> int:
    from deepsdf_ad.data_prep.params import SamplingConfig, default_test_fraction
    from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes

    not_inputs(args.out, folders=[args.src] + ([args.held_out] if args.held_out else []))
    sampling = SamplingConfig(samples=args.samples, variances=tuple(args.variances),
                              uniform_fraction=args.uniform_fraction)
    test = args.test_fraction
    if test is None:
        test = default_test_fraction(bool(args.held_out))
    cfg = PrepConfig(sampling, test_fraction=test, seed=args.seed, scans=args.scans,
                     max_ambiguous=args.max_ambiguous)
    manifest = prep_meshes(args.src, args.out, cfg, workers=workers(args.workers), progress=not args.quiet,
                           shard=args.shard, force=args.force, held_out=args.held_out)
    s = manifest["summary"]
    for r in manifest["meshes"]:
        if r["status"] != "ok":
            print(f"  failed: {r['reason']}")
    print(f"prep: {shard_label(args.shard)}{s['ok']} of {s['meshes']} meshes ok, {s['failed']} failed "
          f"({s['skipped_unchanged']} unchanged, skipped) -> {args.out}")
    if args.shard:
        print(f"prep: when every shard is done: deepsdf-ad prep merge {args.out}")
        return 0
    if s["ok"] == 0:
        raise UserError(f"{args.src}: no mesh could be prepared (see {Path(args.out) / 'manifest.json'})")
    if args.strict and s["failed"]:
        raise UserError(f"{args.src}: {s['failed']} meshes failed and --strict is set "
                        f"(see {Path(args.out) / 'manifest.json'})")
    return 0


def run_prep_scenes(args) -> int:
    from deepsdf_ad.data_prep.params import SamplingConfig
    from deepsdf_ad.data_prep.scenes import SceneConfig, prep_scenes

    not_inputs(args.out, folders=[args.src])
    cfg = SceneConfig(SamplingConfig(samples=args.samples), scenes=args.scenes, objects=args.objects,
                      room_size=args.room_size, gap=args.gap, test_fraction=args.test_fraction,
                      seed=args.seed, scans=args.scans, max_ambiguous=args.max_ambiguous)
    manifest = prep_scenes(args.src, args.out, cfg, workers=workers(args.workers), progress=not args.quiet,
                           force=args.force)
    s = manifest["summary"]
    for r in manifest["meshes"]:
        if r["status"] != "ok":
            print(f"  failed: {r['reason']}")
    print(f"prep: {s['ok']} of {s['scenes']} scenes ok ({s['train']} train, {s['test']} test), "
          f"{s['failed']} failed ({s['skipped_unchanged']} unchanged, skipped); {s['sources_ok']} of "
          f"{s['sources']} meshes usable -> {args.out}")
    if s["ok"] == 0:
        raise UserError(f"{args.src}: no scene could be prepared (see {Path(args.out) / 'manifest.json'})")
    return 0


def run_prep_digits(args) -> int:
    from deepsdf_ad.data_prep.digits import DigitSamplingConfig, download_mnist, parse_labels, prep_digits

    not_inputs(args.out, files=[args.idx_dir])
    if args.download:
        download_mnist(args.idx_dir, progress=not args.quiet)
    cfg = DigitSamplingConfig(samples=args.samples, field=args.field)
    manifest = prep_digits(args.idx_dir, args.out, cfg, labels=parse_labels(args.labels), limit=args.limit,
                           test_fraction=args.test_fraction, seed=args.seed, progress=not args.quiet,
                           shard=args.shard, force=args.force)
    s = manifest["summary"]
    if args.shard:
        print(f"prep: {shard_label(args.shard)}{s['ok']} of {s['digits']} digits ok, {s['failed']} failed, "
              f"field {manifest['field']} -> {args.out}")
        print(f"prep: when every shard is done: deepsdf-ad prep merge {args.out}")
        return 0
    print(f"prep: {s['ok']} of {s['digits']} digits ok ({s['train']} train, {s['test']} test), "
          f"{s['failed']} failed, field {manifest['field']} -> {args.out}")
    if s["ok"] == 0:
        raise UserError(f"{args.idx_dir}: no digit could be prepared "
                        f"(see {Path(args.out) / 'manifest.json'})")
    return 0


def run_prep_merge(args) -> int:
    from deepsdf_ad.data_prep.pipeline import merge_shards

    manifest = merge_shards(args.data, progress=not args.quiet)
    s = manifest["summary"]
    kind = "digits" if manifest.get("kind") == "digits" else "meshes"
    print(f"prep merge: {s['ok']} of {s[kind]} {kind} ok, {s['failed']} failed -> {args.data}")
    if s["ok"] == 0:
        raise UserError(f"{args.data}: no shape was prepared by any shard "
                        f"(see {Path(args.data) / 'manifest.json'})")
    return 0


def run_prep_pack(args) -> int:
    from deepsdf_ad.data_prep.formats import DataRoot
    from deepsdf_ad.data_prep.pack import open_store, pack_store, store_exists, store_paths

    root = DataRoot(args.data, args.split)
    folder = store_paths(root)["manifest"].parent
    if store_exists(root) and not args.rebuild:
        store = open_store(root, root.shapes("train"), full=True)
        print(f"prep pack: {folder} is up to date ({len(store.keys)} shapes, every checksum verified); "
              "--rebuild packs it again")
        return 0
    manifest = pack_store(root, progress=not args.quiet)
    rows = sum(a["rows"] for a in manifest["arrays"].values())
    size = sum(a["bytes"] for a in manifest["arrays"].values())
    lost = manifest["dropped"]
    dropped = f", {lost} rows with NaN or infinite values left out" if lost else ""
    print(f"prep pack: {len(manifest['shapes'])} shapes, {rows} rows ({size / 1e9:.2f} GB){dropped} "
          f"-> {folder}")
    return 0
