"""Procedural shape families, so the demo and the tests run anywhere without downloads.

``table``: a top and four legs (overlapping boxes: a polygon soup with internal faces, like real CAD data).
``bottle``: a closed surface of revolution with a random profile.
``chair``: a seat, four legs and a back.
All are +z up, in arbitrary units, so the normalisation step has something to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

FAMILIES = ("table", "bottle", "chair")


def _box(extents, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def table(rng: np.random.Generator) -> trimesh.Trimesh:
    w, d = rng.uniform(0.8, 1.6), rng.uniform(0.5, 1.0)
    h, top, leg = rng.uniform(0.5, 0.9), rng.uniform(0.04, 0.12), rng.uniform(0.05, 0.14)
    parts = [_box((w, d, top), (0, 0, h - top / 2))]
    inset = rng.uniform(0.0, 0.1)
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, h - top),
                              (sx * (w / 2 - leg / 2 - inset), sy * (d / 2 - leg / 2 - inset),
                                                    (h - top) / 2)))
    return trimesh.util.concatenate(parts)


def chair(rng: np.random.Generator) -> trimesh.Trimesh:
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    h, seat, leg = rng.uniform(0.35, 0.5), rng.uniform(0.04, 0.08), rng.uniform(0.04, 0.07)
    back_h, back_t = rng.uniform(0.3, 0.6), rng.uniform(0.03, 0.07)
    parts = [_box((w, d, seat), (0, 0, h - seat / 2)),
             _box((w, back_t, back_h), (0, d / 2 - back_t / 2, h + back_h / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, h - seat),
                              (sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), (h - seat) / 2)))
    return trimesh.util.concatenate(parts)


def bottle(rng: np.random.Generator) -> trimesh.Trimesh:
    height = rng.uniform(1.0, 2.0)
    body, neck = rng.uniform(0.25, 0.5), rng.uniform(0.08, 0.18)
    shoulder = rng.uniform(0.45, 0.75)
    z = np.linspace(0, height, 24)
    t = np.clip((z / height - shoulder) / 0.2, 0, 1)
    r = body + (neck - body) * (3 * t**2 - 2 * t**3)
    profile = np.concatenate([[[0, 0]], np.stack([r, z], 1), [[0, height]]])
    return trimesh.creation.revolve(profile, sections=48)


def make_shape(family: str, rng: np.random.Generator) -> trimesh.Trimesh:
    makers = {"table": table, "bottle": bottle, "chair": chair}
    if family not in makers:
        raise ValueError(f"unknown shape family '{family}'; known: {', '.join(makers)}")
    mesh = makers[family](rng)
    return trimesh.Trimesh(mesh.vertices * rng.uniform(5, 20), mesh.faces, process=False)


def write_family(out: str | os.PathLike, families: tuple[str, ...] = FAMILIES, per_family: int = 16,
                 seed: int = 0) -> list[Path]:
    """Write ``per_family`` meshes of each family to ``out/<family>/<family>_<k>.obj``."""
    rng = np.random.default_rng(seed)
    paths = []
    for fam in families:
        for k in range(per_family):
            path = Path(out) / fam / f"{fam}_{k:03d}.obj"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_shape(fam, rng).export(path)
            paths.append(path)
    return paths
