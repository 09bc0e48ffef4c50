"""The launcher of ``deepsdf-ad train --nproc N``: the ranks as processes on this machine with torchrun's
environment (see :mod:`deepsdf_ad.distributed`), stopped together when one fails, and the one line that says
why."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from deepsdf_ad.data_prep.log import note

GRACE_SECONDS = 5.0
"""How long the launcher lets the other ranks exit by themselves after one failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Run ``python -m deepsdf_ad ARGV`` as ``nproc`` ranks on this machine (torchrun's environment).

    Rank 0 prints; the other ranks are silent unless they fail. When a rank fails, the others get
    ``GRACE_SECONDS`` to exit by themselves, then are stopped. Returns the exit code (rank 0's if it failed
    by itself, else the failing rank's, whose last error line is printed).
    """
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc)}
    base.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N processes must not each take every core
    procs, logs = [], []
    try:
        for r in range(nproc):
            env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
            log = None if r == 0 else tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "deepsdf_ad", *argv], env=env,
                                          stdout=None if r == 0 else subprocess.DEVNULL, stderr=log,
                                          preexec_fn=_die_with_parent if sys.platform == "linux" else None))
        first_failed, failed_at = None, 0.0
        while any(p.poll() is None for p in procs):
            if first_failed is None:
                failed = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
                if failed:
                    first_failed, failed_at = failed[0], time.monotonic()
            # bad input fails every rank at once: let them exit by themselves and say why; then stop the
            # ranks left waiting for the failed one
            if first_failed is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                _stop([p for p in procs if p.poll() is None])
            time.sleep(0.05)
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        _stop([p for p in procs if p.poll() is None])
        return 130
    try:
        return _report(codes, first_failed, logs)
    finally:
        for log in logs:
            if log is not None:
                log.close()


def _report(codes: list[int], first_failed: int | None, logs: list) -> int:
    """The launcher's exit code for the ranks' ``codes``; says why when rank 0 has not."""
    if all(c == 0 for c in codes):
        return 0
    if codes[0] == 0 and all(c <= 0 for c in codes):
        # rank 0 returns only after the final barrier, which every rank reached: the run is complete, and a
        # rank that died by a signal died tearing down (gloo can abort when a peer closes its sockets first)
        dead = ", ".join(f"rank {r} (signal {-c})" for r, c in enumerate(codes) if c < 0)
        note(f"training finished; {dead} crashed while shutting down afterwards, which does "
              "not affect the run")
        return 0
    if codes[0] > 0 and (codes[0] == 2 or first_failed == 0):
        return codes[0]  # rank 0 failed and printed why
    users = [r for r, c in enumerate(codes) if c == 2]
    if users:
        k = users[0]
    else:
        k = first_failed if first_failed is not None else next(r for r, c in enumerate(codes) if c)
    lines = []
    if logs[k] is not None:
        logs[k].seek(0)
        lines = [ln for ln in logs[k].read().splitlines() if ln.strip()]
    if codes[k] < 0:
        msg = (f"deepsdf-ad: error: rank {k} was killed by signal {-codes[k]}; run the same command again to "
               "resume from the last checkpoint")
    else:
        msg = f"{lines[-1]} (rank {k})" if lines else f"deepsdf-ad: error: rank {k} exited with {codes[k]}"
    print(msg, file=sys.stderr)
    return codes[k] if codes[k] > 0 else 1


def _die_with_parent() -> None:
    """In a rank started by :func:`launch` (Linux): get SIGKILL when the launcher dies, even by SIGKILL, so
    no orphaned rank keeps writing to the run folder while the command is started again."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
