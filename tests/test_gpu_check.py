"""``benchmarks/gpu_check.py``: prepared data of the right size, and the whole check on the CPU (``--quick``)
where open3d, libigl and pyrender cannot be imported (the GPU machine has only the learner's packages)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
# as tests/test_cli.py's LEARNER_ONLY: 'import open3d' raises ImportError, as where it is not installed
WITHOUT_MESH_LIBRARIES = """
import runpy, sys
for name in ("open3d", "igl", "pyrender"):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("open3d", "igl", "pyrender")
                   and sys.modules[m])
    if heavy:
        print(f"imported {heavy}", file=sys.stderr)
        sys.exit(3)
"""


def test_gpu_check_runs_quick_on_the_cpu_without_mesh_libraries(tmp_path):
    data, out = tmp_path / "check", tmp_path / "result.json"
    prep = subprocess.run([sys.executable, SCRIPT, "--prepare", data, "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    assert sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) < 50e6
    again = subprocess.run([sys.executable, SCRIPT, "--prepare", data], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "not empty" in again.stderr  # never written into

    proc = subprocess.run([sys.executable, "-c", WITHOUT_MESH_LIBRARIES, SCRIPT, data, "--device", "cpu",
                           "--quick", "--json", out], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("1. training points/s", "2. reconstruct end to end", "3. meshing", "4. kill and resume"):
        assert heading in proc.stdout
    result = json.loads(out.read_text())
    for precision in ("bf16", "fp32"):
        t = result["train"][precision]
        assert t["full_step"]["points_per_s"] > 0 and t["decoder_alone"]["points_per_s"] > 0
    assert result["reconstruct"]["ok"], result["reconstruct"]
    assert result["meshing"]["dense_fp32_queries_per_s"] > 0
    k = result["kill_resume"]
    assert k["killed"] and k["bitwise"] and k["ok"]  # on the CPU a resumed run is the same bit for bit
    assert result["peak_gb"] is None  # no CUDA
    assert not {"open3d", "igl", "pyrender", "matplotlib"} & set(result["imported"])
