"""The package as users get it: build the wheel (offline), install it into a fresh virtual environment that
borrows this environment's dependencies (no download), and run the installed ``deepsdf-ad`` from a folder
outside the repository: ``--version`` and ``demo --quick`` (which finds its preset by name)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from deepsdf_ad.demo import QUICK
from tests.helpers import REPO

SOURCES = ("pyproject.toml", "README.md", "deepsdf_ad", "data_prep", "viz", "configs")
"""What the build reads (the package and the folders its links point to), copied so that the build's
``build/`` and ``*.egg-info`` land outside the checkout."""


def run(*cmd, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    tail = f"{proc.stdout[-1500:]}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{tail}"
    return proc


def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index",
        "-w", tmp_path / "dist", "-q", cwd=tmp_path, env=env)
    wheel, = (tmp_path / "dist").glob("deepsdf_ad-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    purelib = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path,
                       env=env).stdout.strip())
    # the dependencies (and pip) from here; a .pth line adds the folder only, so the editable install of this
    # checkout (a finder started by a .pth file in that folder) stays out of the new environment
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel,
        cwd=tmp_path, env=env)

    tops = {p.name for p in purelib.iterdir()}
    assert "deepsdf_ad" in tops and not {"data_prep", "viz", "configs"} & tops, sorted(tops)
    record = next(purelib.glob("deepsdf_ad-*.dist-info")) / "RECORD"
    files = [line.split(",")[0] for line in record.read_text().splitlines()]
    assert all(f.startswith(("deepsdf_ad/", "deepsdf_ad-", "../")) for f in files), files
    assert "deepsdf_ad/configs/shapes_small.yaml" in files and "deepsdf_ad/data_prep/formats.py" in files

    away = tmp_path / "elsewhere"  # no configs/ here, no checkout above
    away.mkdir()
    cli = venv / "bin" / "deepsdf-ad"
    version = run(cli, "--version", cwd=away, env=env).stdout.strip()
    assert version == f"deepsdf-ad {wheel.name.split('-')[1]}"
    where = run(py, "-c", "import deepsdf_ad; print(deepsdf_ad.__file__)", cwd=away, env=env).stdout.strip()
    assert Path(where).resolve().is_relative_to(purelib.resolve()), where

    demo = run(cli, "demo", "--quick", "--out", "demo", "--device", "cpu", cwd=away, env=env, timeout=300)
    result = json.loads(demo.stdout[demo.stdout.index("{"):])
    assert result["epochs_trained"] == QUICK.epochs and result["chamfer_x1e3"] > 0  # the preset, by name
    assert (away / "demo" / "run" / "latent_codes.safetensors").is_file()
    assert (away / result["reconstruction"]).is_file() and (away / result["partial_scan"]).is_file()
