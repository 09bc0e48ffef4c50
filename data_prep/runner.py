"""One runner for every prep kind (meshes, digits, scenes): it owns the parts they share, and each kind plugs
in what is its own through :class:`JobKind`.

The runner: deals the items to shards, removes the temporaries of killed runs, reuses the records of earlier
runs, runs the items (in a worker pool, with a progress bar), rewrites the manifest while they run, and ends a
shard with its shard manifest or a whole run with the splits and ``manifest.json``; :func:`merge` ends a set
of shards the same way.

A kind supplies: its per-item function (:attr:`JobKind.task`), its items (:class:`Item`, each with that
function's arguments), its parameters and manifest header, when an earlier record still holds
(:meth:`JobKind.reusable`), and its finishing step (:meth:`JobKind.finish`: the scans of meshes, the summary
of digits and scenes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tqdm import tqdm

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.jobs import (
    make_splits,
    remove_shard_temporaries,
    remove_stale_temporaries,
    reusable_records,
    shard_owner,
    worker_pool,
)

TOOL_VERSION = "0.2.0"
"""Version written into the manifests of meshes and scenes."""
FLUSH_SECONDS = 2.0
"""While items run, the manifest is rewritten at most this often: a killed run loses no more work."""


@dataclass
class Item:
    """One unit of prep work: a mesh, a digit or a scene."""

    key: tuple[str, str]
    """(category, id): shards are dealt by it, and earlier records are found by it."""
    args: tuple = ()
    """The arguments of the kind's per-item function (:attr:`JobKind.task`)."""
    head: dict = field(default_factory=dict)
    """The first fields of its record; a worker that dies leaves a failed record made of them."""
    name: str = ""
    """How the reason of a failure names it (its input file, or category/id)."""
    known: dict | None = None
    """A record known without running anything (a duplicate id): it is neither reused nor run."""


@dataclass
class Outcome:
    """What a finished run (or merge) hands to :meth:`JobKind.finish`."""

    records: list[dict]
    """Every item's record, in the kind's order (:meth:`JobKind.order`)."""
    train: dict[str, list[str]]
    test: dict[str, list[str]]
    """The splits (category -> ids) written to ``DATA/splits``."""
    skipped: int
    """Items whose earlier record was reused."""
    seconds: float
    """Wall time of the run so far."""


class JobKind:
    """What one kind of prep supplies to the runner. Subclasses set the class attributes and the hooks that
    differ from the defaults; an instance holds the kind's settings (its config)."""

    name: ClassVar[str]
    """The manifest's ``kind`` (:func:`merge` is chosen by it) and the progress bar's ``prep <name>``."""
    records_key: ClassVar[str] = "meshes"
    """The manifest's list of per-item records."""
    unit: ClassVar[str] = "mesh"
    task: ClassVar[Callable[..., dict]]
    """The per-item function, ``task(*item.args) -> record`` (status ok or failed); a module-level function,
    so that worker processes can run it."""
    temp_dirs: ClassVar[tuple[str, ...]] = ()
    """Data folders besides the common ones where this kind writes (and a killed run leaves temp files)."""
    flush: ClassVar[bool] = True
    """Rewrite the manifest while items run (before the first, then every :data:`FLUSH_SECONDS`), so that a
    killed run's finished items are reused. False: the manifest is written at the end only."""
    reuse: ClassVar[str] = "records"
    """How earlier work is found: ``records``, the records of earlier manifests with the same parameters;
    ``finished``, every item of an earlier run with the same parameters that finished (see
    :func:`earlier_records`)."""
    timed: ClassVar[bool] = False
    """Summaries carry the run's wall ``seconds``."""

    def reusable(self, out: Path, item: Item, old: dict) -> bool:
        """Whether ``old``, an ok record of an earlier run with the same parameters, still holds for ``item``
        (same input, outputs intact)."""
        raise NotImplementedError

    def order(self, rec: dict) -> tuple:
        """Sort key of the records in the manifest."""
        return rec["category"], rec["id"], rec.get("file", "")

    def splits(self, records: list[dict], params: dict) -> tuple[dict, dict]:
        """Train and test ids per category: by default a seeded split of the ok items per category."""
        ok = [(r["category"], r["id"]) for r in records if r.get("status") == "ok"]
        return make_splits(ok, params["test_fraction"], params["seed"])

    def shard_fields(self) -> dict:
        """Fields a shard manifest holds besides the header, for :meth:`from_shard`."""
        return {}

    @classmethod
    def from_shard(cls, manifest: dict) -> tuple[JobKind, dict]:
        """The kind and the manifest header of a merge, from the first shard's manifest."""
        raise NotImplementedError

    def summary(self, done: Outcome) -> dict:
        n_ok = sum(1 for r in done.records if r.get("status") == "ok")
        s = {self.records_key: len(done.records), "ok": n_ok, "failed": len(done.records) - n_ok,
             "skipped_unchanged": done.skipped}
        return {**s, "seconds": round(done.seconds, 2)} if self.timed else s

    def finish(self, out: Path, manifest: dict, done: Outcome, progress: bool) -> dict:
        """The kind's last step of a whole run or a merge (after the splits are written); returns the manifest
        to write: by default the records and :meth:`summary`."""
        manifest[self.records_key] = done.records
        manifest["summary"] = self.summary(done)
        return manifest


def run_jobs(fn: Callable[..., dict], jobs: list[tuple], workers: int, failed: Callable[[int, str], dict],
             done: Callable[[int, dict], None], desc: str, unit: str, progress: bool) -> None:
    """``fn(*job)`` for every job, in worker processes when ``workers > 1``; ``done(index, record)`` as each
    finishes (in the calling process). A worker that dies fails only its job: ``failed(index, why)`` is its
    record."""
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress or not jobs) as bar:
        if workers > 1 and len(jobs) > 1:
            with worker_pool(min(workers, len(jobs))) as pool:
                futs = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futs):
                    try:
                        rec = fut.result()
                    except Exception as e:  # a worker that died (e.g. killed for memory)
                        rec = failed(futs[fut], f"worker failed ({type(e).__name__}: {e})")
                    done(futs[fut], rec)
                    bar.update(1)
        else:
            for i, job in enumerate(jobs):
                done(i, fn(*job))
                bar.update(1)


def shard_items(items: list[Item], shard: tuple[int, int] | None) -> list[Item]:
    """The items of shard ``(I, N)`` (round-robin over the sorted keys, :func:`shard_owner`); all without."""
    if not shard:
        return items
    owner = shard_owner([it.key for it in items], shard[1])
    return [it for it in items if owner[it.key] == shard[0]]


def _same_params(path: Path, params: dict) -> bool:
    try:
        return path.is_file() and formats.read_json(path).get("params") == params
    except (formats.DataError, AttributeError):
        return False


def finished_with(path: Path, params: dict) -> bool:
    """Did a run with ``params`` finish writing the manifest at ``path``? (Manifests of older versions have
    no ``complete`` field; they were written only at the end.)"""
    try:
        old = formats.read_json(path) if path.is_file() else {}
    except formats.DataError:
        return False
    return isinstance(old, dict) and old.get("params") == params and old.get("complete", True) is True


def earlier_records(kind: JobKind, out: Path, header: dict, target: Path) -> Callable[[tuple], dict | None]:
    """key -> the record of an earlier run to reuse, if any (still subject to :meth:`JobKind.reusable`).

    ``records``: from ``manifest.json`` and the shard manifests with the same parameters. ``finished``: an ok
    record for every key when a run with the same parameters finished (``manifest.json`` or this shard's
    manifest); otherwise none, and those manifests are first marked incomplete (``complete: false``), so that
    no later run takes files of mixed parameters as done.
    """
    params = header["params"]
    if kind.reuse == "records":
        return reusable_records(out, params, kind.records_key).get
    paths = {out / formats.MANIFEST, target}
    if any(finished_with(p, params) for p in paths):
        return lambda key: {"category": key[0], "id": key[1], "status": "ok"}
    for p in paths:  # before any file changes
        if not _same_params(p, params):
            formats.write_json(p, {**header, "complete": False})
    return lambda key: None


def run_prep(kind: JobKind, out: Path, header: dict, items: list[Item], workers: int = 1,
             progress: bool = True, shard: tuple[int, int] | None = None) -> dict:
    """Run ``items`` of ``kind`` into the data root ``out``; returns the manifest.

    Args:
        header: the manifest's first fields, with ``params`` (earlier records are reused only under the same).
        items: every item of the run; with ``shard=(I, N)`` only shard I's are run, and the manifest goes to
            ``DATA/shards/shard-I-of-N.json`` (:func:`merge` writes the splits and ``manifest.json``).
    """
    t0 = time.perf_counter()
    mine = shard_items(items, shard)
    out.mkdir(parents=True, exist_ok=True)
    target = formats.shard_manifest_path(out, *shard) if shard else out / formats.MANIFEST
    if shard:
        remove_stale_temporaries(out, sorted({it.key for it in mine}), extra_dirs=kind.temp_dirs)
        remove_shard_temporaries(target)
    else:
        remove_stale_temporaries(out, extra_dirs=kind.temp_dirs)
    earlier = earlier_records(kind, out, header, target)
    records: dict[int, dict] = {}
    todo = []
    for i, it in enumerate(mine):
        if it.known is not None:
            records[i] = it.known
            continue
        old = earlier(it.key)
        if old and old.get("status") == "ok" and kind.reusable(out, it, old):
            records[i] = old
        else:
            todo.append(i)
    manifest = dict(header)
    if shard:
        manifest.update(kind=kind.name, shard={"index": shard[0], "count": shard[1]}, complete=False,
                        **kind.shard_fields())
    _run_items(kind, [mine[i] for i in todo], todo, records, manifest, target, workers, progress)
    skipped = sum(1 for it in mine if it.known is None) - len(todo)
    done = Outcome(sorted(records.values(), key=kind.order), {}, {}, skipped, time.perf_counter() - t0)
    if shard:
        manifest.update(complete=True, **{kind.records_key: done.records}, summary=kind.summary(done))
        formats.write_json(target, manifest)
        return manifest
    return _finish(kind, out, manifest, done, progress)


def _run_items(kind: JobKind, items: list[Item], slots: list[int], records: dict[int, dict], manifest: dict,
               target: Path, workers: int, progress: bool) -> None:
    """Run ``items`` (their records go to ``records[slots[k]]``), rewriting the manifest as they finish."""
    def flush() -> None:
        manifest[kind.records_key] = sorted(records.values(), key=kind.order)
        formats.write_json(target, manifest)

    last = time.monotonic()

    def done(k: int, rec: dict) -> None:
        nonlocal last
        records[slots[k]] = rec
        if kind.flush and time.monotonic() - last > FLUSH_SECONDS:
            flush()
            last = time.monotonic()

    def failed(k: int, why: str) -> dict:
        return {**items[k].head, "status": "failed", "reason": f"{items[k].name}: {why}"}

    if kind.flush and items:
        flush()
    jobs = [it.args for it in items]
    run_jobs(kind.task, jobs, workers, failed, done, f"prep {kind.name}", kind.unit, progress)


def _finish(kind: JobKind, out: Path, manifest: dict, done: Outcome, progress: bool) -> dict:
    """Splits, the kind's finishing step and ``manifest.json``."""
    done.train, done.test = kind.splits(done.records, manifest["params"])
    formats.write_split(out / formats.SPLITS_DIR / formats.TRAIN_SPLIT, done.train)
    formats.write_split(out / formats.SPLITS_DIR / formats.TEST_SPLIT, done.test)
    manifest = kind.finish(out, manifest, done, progress)
    formats.write_json(out / formats.MANIFEST, manifest)
    return manifest


def merge(kinds: dict[str, type[JobKind]], out: Path, shards: list[dict], progress: bool = True) -> dict:
    """The splits and ``manifest.json`` of a complete set of shard manifests (checked by
    :func:`deepsdf_ad.data_prep.jobs.read_shards`), as one unsharded run writes them; ``kinds``: the kinds
    that shard, by name."""
    t0 = time.perf_counter()
    try:
        kind, header = kinds[shards[0]["kind"]].from_shard(shards[0])
    except (KeyError, TypeError) as e:
        raise formats.DataError(f"{out / formats.SHARDS_DIR}: shard manifests lack parameters ({e}); re-run "
                                "the shards") from None
    records = sorted((r for m in shards for r in m.get(kind.records_key, [])), key=kind.order)
    skipped = sum(m.get("summary", {}).get("skipped_unchanged", 0) for m in shards)
    return _finish(kind, out, header, Outcome(records, {}, {}, skipped, time.perf_counter() - t0), progress)
