"""Output folders: who made them, and who writes into them now.

A run folder (``train``) and a data root (``prep``) carry a marker file, :data:`MARKER`, saying which command
made them. Writing into an existing, non-empty folder without it is refused (``--force`` overrides): ``train``
and ``prep`` replace files with fixed names (``config.yaml``, ``manifest.json``, ...), which must never be a
user's. Folders written before the marker existed are recognised by their own files and adopted.

One writer at a time: :class:`FolderLock` holds an advisory lock (``fcntl.flock``) on :data:`LOCK` in the
folder for as long as the command runs. The kernel releases it when the process ends, however it ends, so a
lock left by a killed process never blocks; the file records the holder's pid and host for the message a
second writer gets.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from deepsdf_ad.data_prep.formats import DataError, is_temp_file, write_json

MARKER = ".deepsdf-ad"
"""Marker file of a folder this toolkit made: ``{"made_by": "deepsdf-ad train", "kind": "run"}``."""
LOCK = ".deepsdf-ad.lock"
"""Advisory lock file of a folder being written; holds ``{"pid", "host", "command"}`` of the writer."""
KINDS = {"run": "deepsdf-ad train", "data": "deepsdf-ad prep"}
"""What kind of folder each command makes."""


def _legacy(folder: Path, kind: str) -> bool:
    """A folder of ``kind`` written before markers existed (recognised by files only we write)."""
    try:
        if kind == "run":
            shapes = json.loads((folder / "shapes.json").read_text())
            return ((folder / "config.yaml").is_file() and isinstance(shapes, dict)
                    and {"data", "keys"} <= set(shapes))
        for f in [folder / "manifest.json", *sorted(folder.glob("shards/shard-*.json"))[:1]]:
            if f.is_file():
                manifest = json.loads(f.read_text())
                return isinstance(manifest, dict) and manifest.get("tool") == "deepsdf-ad"
        return False
    except (OSError, ValueError):
        return False


def claim_folder(folder: str | os.PathLike, kind: str, force: bool = False) -> Path:
    """Make ``folder`` ours to write into (creating it), or raise :class:`DataError`.

    Args:
        folder: the output folder (``--out``).
        kind: ``run`` or ``data`` (see :data:`KINDS`).
        force: write into a non-empty folder without our marker anyway (``--force``).

    Returns:
        The folder, which now exists and carries the marker.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            made = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            made = None
        if made not in (kind, None) and not force:
            raise DataError(f"{folder}: is a {made} folder (made by {KINDS.get(made, made)}), not a {kind} "
                            "folder; use another --out")
        return folder
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; use another --out")
    # another writer's lock, or the temp file of a marker being written (two shards starting at once), is not
    # somebody else's content
    busy = folder.is_dir() and any(p.name != LOCK and not is_temp_file(p) for p in folder.iterdir())
    if busy and not force and not _legacy(folder, kind):
        raise DataError(f"{folder}: folder exists, is not empty and was not made by {KINDS[kind]} (no "
                        f"{MARKER} marker); its files could be replaced: use a new or empty --out, or "
                        "--force to write into it")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"made_by": KINDS[kind], "kind": kind})
    return folder


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, shared: bool = False, wait: bool = False) -> Iterator[int | None]:
    """``with file_lock(path) as fd:`` hold an advisory lock (``fcntl.flock``) on the file at ``path`` (made
    when missing): ``fd`` is its open descriptor once held, or None at once when another process holds it and
    not ``wait`` (``wait``: block until it is free). ``shared``: a shared lock, which others' shared locks may
    hold beside, but not an exclusive one. The lock goes with its process, however it ends; the file stays
    (removing it would race a new holder)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


class FolderLock:
    """``with FolderLock(folder, "train"):`` the only writer of ``folder``, or :class:`DataError` naming the
    holder. ``shared=True`` takes a shared lock instead: several shared holders may write at once (sharded
    preps), but never beside an exclusive one."""

    def __init__(self, folder: str | os.PathLike, command: str, shared: bool = False):
        self.folder = Path(folder)
        self.command = command
        self.shared = shared
        self._held: contextlib.ExitStack | None = None
        self._fd = -1

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK
        held = contextlib.ExitStack()
        fd = held.enter_context(file_lock(path, shared=self.shared))
        if fd is None:
            held.close()
            raise DataError(f"{self.folder}: in use by another process ({_holder(path)}); wait for it to "
                            "end, or use another --out")
        self._held, self._fd = held, fd
        if not self.shared:  # a shared holder leaves the record of the first one
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "command": self.command}).encode())
        return self

    def __exit__(self, *exc) -> None:
        if self._held is not None:
            if not self.shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)  # no record of a holder that has gone
            self._held.close()  # releases the lock
            self._held = None


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike, kind: str, command: str, force: bool = False,
                  shared: bool = False) -> Iterator[Path]:
    """``with output_folder(out, "run", "deepsdf-ad train"):`` the folder is ours (:func:`claim_folder`) and
    this process its only writer (:class:`FolderLock`; ``shared``: one of several, as sharded preps) until the
    block ends. A folder this call created and left holding nothing but the marker is removed again when the
    block fails (a command that stops on bad input leaves nothing behind)."""
    folder = Path(folder)
    created = not folder.exists()
    claim_folder(folder, kind, force)
    try:
        with FolderLock(folder, command, shared=shared):
            yield folder
    except BaseException:
        if created and folder.is_dir() and {p.name for p in folder.iterdir()} <= {MARKER, LOCK}:
            for name in (MARKER, LOCK):
                (folder / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"{info.get('command', 'deepsdf-ad')}, pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a sharded prep, or a holder that left no record"


def writes_data_root(command: str):
    """Decorator of a prep function with parameters ``out`` (the data root) and optionally ``shard``: it runs
    inside :func:`output_folder` (a shared lock for a shard, else exclusive) and takes a keyword ``force``
    (write into a non-empty folder that is not a data root of ours)."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, force: bool = False, **kwargs):
            bound = signature.bind(*args, **kwargs)
            shard = bound.arguments.get("shard")
            with output_folder(bound.arguments["out"], "data", command, force=force,
                               shared=shard is not None):
                return fn(*args, **kwargs)
        return wrapper
    return decorate
