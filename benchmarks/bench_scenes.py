"""Scene data benchmark: how right are the signs of composed scenes, and what does a scene cost to prepare.

For every scene of a data root written by ``deepsdf-ad prep scenes``, the sign of each SDF sample (a subset of
``--points``) is compared with the signs the same machinery gives each object *on its own*: every placed
object is signed separately (its own repair and visibility vote, as ``prep meshes`` would sign it), and a
sample is inside the scene when it is inside one object. A disagreement means composing changed a sign (for
example, an object hiding another from the visibility vote). Near-surface samples are those within 0.01 of the
surface. Also prints the seconds per scene recorded in the manifest (wall and CPU) and the manifest's sign
figures.

    python benchmarks/bench_scenes.py DATA [--points 100000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.meshes import SignedDistance, load_mesh

ROOT = Path(__file__).resolve().parents[1]


def object_union_inside(objects: list[dict], points: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(points), bool)
    for obj in objects:
        mesh = load_mesh(obj["file"])
        mesh.apply_transform(np.asarray(obj["transform"], float))
        sd = SignedDistance(mesh)
        inside |= sd.inside(sd.winding(points))
    return inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--points", type=int, default=100_000,
                    help="samples per scene compared (a seeded subset)")
    args = ap.parse_args()
    manifest = json.loads((args.data / formats.MANIFEST).read_text())
    rows = []
    for rec in manifest["meshes"]:
        if rec["status"] != "ok":
            continue
        pos, neg = formats.load_sdf_samples(args.data / formats.SDF_DIR / formats.SCENE_CATEGORY
                                            / f"{rec['id']}.npz")
        s = np.concatenate([pos, neg])
        s = s[np.random.default_rng(0).choice(len(s), size=min(args.points, len(s)), replace=False)]
        truth = object_union_inside(rec["objects"], s[:, :3].astype(np.float64))
        agree = (s[:, 3] <= 0) == truth
        near = np.abs(s[:, 3]) < 0.01
        q = rec["sign_quality"]
        rows.append((rec["id"], len(rec["objects"]), rec["faces"], rec["seconds"], rec.get("cpu_seconds"),
                     100 * agree.mean(), 100 * agree[near].mean(), q["ambiguous"], q["disagree"]))
        print(f"{rec['id']}: {len(rec['objects'])} objects "
              f"({', '.join(o['category'] for o in rec['objects'])}), {rec['faces']} faces, "
              f"{rec['seconds']:.1f} s wall / {rec.get('cpu_seconds', float('nan')):.1f} s CPU; signs agree "
              f"with the objects' own: {100 * agree.mean():.3f}% all, {100 * agree[near].mean():.3f}% near; "
              f"manifest ambiguous {q['ambiguous']:.4f} disagree {q['disagree']:.4f}", flush=True)
    a = np.array([r[3:] for r in rows], float)
    print(f"{len(rows)} scenes: wall s/scene median {np.median(a[:, 0]):.1f}, CPU s/scene median "
          f"{np.nanmedian(a[:, 1]):.1f}; sign agreement min {a[:, 2].min():.3f}% (near "
          f"{a[:, 3].min():.3f}%), median {np.median(a[:, 2]):.3f}%; ambiguous max {a[:, 4].max():.4f}; "
          f"disagree max {a[:, 5].max():.4f}")


if __name__ == "__main__":
    main()
