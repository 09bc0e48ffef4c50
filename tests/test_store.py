"""The memory-mapped sample store: packed once from the sample files, it draws exactly the in-memory bank's
samples for a seed; rank shares are disjoint and cover every shape; a truncated or changed file is refused in
one line until ``prep pack --rebuild``; ``train`` with the store trains, resumes and splits across ranks as
with the in-memory bank."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepsdf_ad.data import SampleBank
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.pack import open_store, pack_store, store_exists, store_paths
from deepsdf_ad.distributed import World, shares
from deepsdf_ad.store import MappedBank, load_samples, wants_store
from tests.helpers import REPO, assert_one_line_error, cli

SMALL = REPO / "configs" / "shapes_small.yaml"


def make_root(root, shapes: int = 7, seed: int = 0, dim: int = 3):
    """A data root of ``shapes`` shapes of uneven sample counts; shape 1 has NaN rows, shape 2 no ``pos``."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(shapes):
        n = int(rng.integers(300, 900))
        q = rng.uniform(-1, 1, (n, dim))
        s = np.linalg.norm(q, axis=1) - rng.uniform(0.3, 0.7)
        rows = np.concatenate([q, s[:, None]], axis=1).astype(np.float32)
        pos, neg = rows[s > 0], rows[s <= 0]
        if i == 1:
            pos[::7, 0] = np.nan
            neg[::5, -1] = np.inf
        if i == 2:
            pos = pos[:0]
        ids.append(f"s{i:02d}")
        formats.save_sdf_samples(root / "sdf" / "toy" / f"{ids[-1]}.npz", pos, neg)
    formats.write_split(root / "splits" / "train.json", {"toy": ids})
    return root


@pytest.fixture
def data(tmp_path):
    return make_root(tmp_path / "data")


def test_the_store_draws_exactly_the_in_memory_banks_samples(data):
    root = formats.DataRoot(data)
    refs = root.shapes("train")
    bank = SampleBank(refs, 3, progress=False, warn=False)
    manifest = pack_store(root)
    assert manifest["dropped"] > 0 and len(manifest["shapes"]) == 7
    mapped = MappedBank(open_store(root, refs))
    assert mapped.keys == bank.keys and len(mapped) == len(bank)
    for i in range(len(bank)):  # the same rows, NaN rows dropped, shape 2's missing pos borrowed from neg
        assert torch.equal(mapped.all_samples(i), bank.all_samples(i))
    for seed in (0, 1, 2):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for step in range(5):  # a stream of steps: both consume the generator alike
            idx = torch.randperm(7, generator=torch.Generator().manual_seed(step))[:4]
            n = 255 + step  # odd counts too: pos takes the larger half
            assert torch.equal(mapped.draw(idx, n, g2), bank.draw(idx, n, g1))


def test_a_ranks_share_draws_its_shapes_alike_and_consumes_the_same_randomness(data):
    root = formats.DataRoot(data)
    refs = root.shapes("train")
    pack_store(root)
    bank = SampleBank(refs, 3, progress=False, warn=False)
    ranks = [MappedBank(open_store(root, refs), r, 3) for r in range(3)]
    idx = torch.tensor([6, 0, 3, 1, 5, 2])
    full = bank.draw(idx, 64, torch.Generator().manual_seed(5))
    covered = torch.zeros(len(idx), dtype=torch.bool)
    for r, b in enumerate(ranks):
        got = b.draw(idx, 64, torch.Generator().manual_seed(5))
        mine = b.owners[idx] == r
        assert torch.equal(got[mine], full[mine])
        assert not got[~mine].any()  # the others' shapes are not read
        covered |= mine
    assert covered.all()


@pytest.mark.parametrize("shapes,ranks", [(7, 1), (7, 2), (7, 3), (12, 5), (3, 4), (2000, 8)])
def test_rank_shares_are_disjoint_and_cover_every_shape(shapes, ranks):
    owners = shares(shapes, ranks)
    assert owners.shape == (shapes,) and owners.min() >= 0 and owners.max() < ranks
    sizes = torch.bincount(owners, minlength=ranks)
    assert sizes.sum() == shapes and sizes.max() - sizes.min() <= 1  # every shape exactly once, balanced
    assert (owners[1:] >= owners[:-1]).all()  # each share one stretch of the store
    world = World(0, ranks, owners=owners)
    index = torch.randperm(shapes)[:min(shapes, 9)]
    parts = [set(world.positions(index, r).tolist()) for r in range(ranks)]
    assert set().union(*parts) == set(range(len(index)))
    assert sum(len(p) for p in parts) == len(index)
    assert [world.count(index, r) for r in range(ranks)] == [len(p) for p in parts]


def test_pages_are_released_past_the_budget_and_draws_stay_exact(data):
    root = formats.DataRoot(data)
    refs = root.shapes("train")
    pack_store(root)
    bank = SampleBank(refs, 3, progress=False, warn=False)
    mapped = MappedBank(open_store(root, refs), resident_bytes=20_000)  # about two shapes
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for k in range(6):
        idx = torch.tensor([k % 7, (k + 3) % 7])
        assert torch.equal(mapped.draw(idx, 100, g2), bank.draw(idx, 100, g1))
    assert mapped.releases >= 2


def test_auto_chooses_the_store_only_when_the_banks_would_not_fit(data, monkeypatch):
    refs = formats.DataRoot(data).shapes("train")
    assert wants_store("mmap", refs, 1)[0] and not wants_store("memory", refs, 1)[0]
    assert not wants_store("auto", refs, 8)[0]  # a few kB
    size = sum(r.sdf.stat().st_size for r in refs)
    monkeypatch.setattr("deepsdf_ad.store.memory_bytes", lambda: 4 * size * 2)  # two banks = a quarter: fits
    assert not wants_store("auto", refs, 2)[0]
    use, why = wants_store("auto", refs, 3)
    assert use and "3 ranks" in why


def test_first_training_with_the_store_packs_it(data, capsys):
    root = formats.DataRoot(data)
    refs = root.shapes("train")
    assert not store_exists(root)
    bank = load_samples(root, refs, 3, "mmap", World())
    assert isinstance(bank, MappedBank) and store_exists(root)
    assert "packing the training samples" in capsys.readouterr().err
    bank = load_samples(root, refs, 3, "auto", World())  # small: in memory
    assert isinstance(bank, SampleBank)


def _rebuild_needed(proc, name):
    assert_one_line_error(proc, name, "prep pack", "--rebuild")


def test_truncated_or_changed_files_are_refused_in_one_line_until_rebuilt(data, tmp_path):
    assert cli("prep", "pack", data, "--quiet", check=True).stdout.startswith("prep pack: 7 shapes")
    ok = cli("prep", "pack", data, check=True)
    assert "up to date" in ok.stdout
    root = formats.DataRoot(data)
    paths = store_paths(root)
    run = ["train", "--config", SMALL, "--data", data, "--quiet", "--device", "cpu", "--epochs", "1",
           "--set", "train.sample_store=mmap", "--set", "model.decoder.hidden=[80,80,80,80]",
           "--set", "model.decoder.latent_in=[2]"]

    # a truncated array: found by its size, at once
    whole = paths["neg"].read_bytes()
    paths["neg"].write_bytes(whole[:-16])
    _rebuild_needed(cli(*run, "--out", tmp_path / "r1"), paths["neg"].name)
    _rebuild_needed(cli("prep", "pack", data), paths["neg"].name)
    # the same size, another value: found by the checksum (its modification time changed)
    changed = bytearray(whole)
    changed[-3] ^= 0x40
    paths["neg"].write_bytes(bytes(changed))
    _rebuild_needed(cli(*run, "--out", tmp_path / "r2"), paths["neg"].name)
    # changed back with only the time touched: accepted (its checksum matches)
    paths["neg"].write_bytes(whole)
    assert "up to date" in cli("prep", "pack", data, check=True).stdout

    # a source file changed after packing
    src = data / "sdf" / "toy" / "s03.npz"
    pos, neg = formats.load_sdf_samples(src)
    formats.save_sdf_samples(src, pos, neg * 1.5)
    _rebuild_needed(cli(*run, "--out", tmp_path / "r3"), "s03.npz")
    assert not (tmp_path / "r3" / "checkpoints").exists()
    # the split lists other shapes now
    formats.write_split(data / "splits" / "train.json", {"toy": ["s00", "s01"]})
    _rebuild_needed(cli(*run, "--out", tmp_path / "r4"), "train.json")
    rebuilt = cli("prep", "pack", data, "--rebuild", "--quiet", check=True)
    assert rebuilt.stdout.startswith("prep pack: 2 shapes")
    cli(*run, "--out", tmp_path / "r5", check=True)


def test_a_foreign_file_in_the_store_folder_is_left_alone(data):
    (data / "store").mkdir()
    (data / "store" / "notes.txt").write_text("mine")
    proc = cli("prep", "pack", data)
    assert_one_line_error(proc, "notes.txt")
    assert (data / "store" / "notes.txt").read_text() == "mine"


def test_a_bad_manifest_is_one_line(data):
    pack_store(formats.DataRoot(data))
    (data / "store" / "train.json").write_text(json.dumps({"format": "something else"}))
    _rebuild_needed(cli("prep", "pack", data), "train.json")
    # hostile index values are refused before anything is read through them
    pack_store(formats.DataRoot(data))
    m = json.loads((data / "store" / "train.json").read_text())
    m["shapes"][3]["pos"] = [10**9, 5]
    (data / "store" / "train.json").write_text(json.dumps(m))
    _rebuild_needed(cli("prep", "pack", data), "points outside")


def test_the_store_folder_is_not_a_valid_output(data, tmp_path):
    pack_store(formats.DataRoot(data))
    proc = cli("train", "--config", SMALL, "--data", data, "--out", data / "store" / "run")
    assert_one_line_error(proc, "--out")


def test_the_arrays_are_plain_npy_files_of_consecutive_blocks(data):
    root = formats.DataRoot(data)
    m = pack_store(root)
    store = open_store(root, root.shapes("train"))
    for side in ("pos", "neg"):
        blocks = [s[side] for s in m["shapes"]]
        assert blocks[0][0] == 0
        assert all(b[0] == a[0] + a[1] for a, b in zip(blocks, blocks[1:], strict=False))
        plain = np.load(store_paths(root)[side], mmap_mode="r", allow_pickle=False)
        assert plain.dtype == np.float32 and np.array_equal(plain, getattr(store, side))
        assert len(plain) == blocks[-1][0] + blocks[-1][1]


# ---- training with the store ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from tests.test_autoencoder import make_tiny_digits

    return make_tiny_digits(tmp_path_factory.mktemp("store_digits"))


def test_pack_train_and_resume_with_the_store_give_the_in_memory_runs_weights_exactly(digits, tmp_path):
    from tests.test_train_faults import PRESET, TINY_FAULTS

    def train(out, epochs, store):
        sets = [a for kv in [*TINY_FAULTS, f"train.sample_store={store}"] for a in ("--set", kv)]
        return cli("train", "--config", PRESET, "--data", digits, "--out", out, "--epochs", epochs, "--quiet",
                   "--device", "cpu", *sets, check=True)

    assert "shapes" in cli("prep", "pack", digits, "--quiet", check=True).stdout
    memory, mapped = tmp_path / "memory", tmp_path / "mapped"
    train(memory, 6, "memory")
    proc = train(mapped, 3, "mmap")
    assert "samples from the store" in proc.stderr
    train(mapped, 6, "mmap")  # resumed from epoch 3's checkpoint
    a = load_file(str(memory / "checkpoints" / "epoch_000006.safetensors"))
    b = load_file(str(mapped / "checkpoints" / "epoch_000006.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the same samples
    assert torch.equal(load_file(str(memory / "latent_codes.safetensors"))["codes"],
                       load_file(str(mapped / "latent_codes.safetensors"))["codes"])


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("extra", [(), ("train.shapes_per_batch=2", "train.batch_split=2")],
                         ids=["shares", "a-rank-without-shapes"])
def test_two_ranks_reading_their_shares_train_the_same_model_as_one(digits, tmp_path, extra):
    """Each rank reads only its share of the shapes and trains the positions of each batch that hold them; the
    gradients and codes are those of one process. With batches of 2 in parts of 1 shape, one rank has no shape
    in every part."""
    from tests.test_distributed import assert_same_model, losses, train_cli

    one, two = tmp_path / "one", tmp_path / "two"
    train_cli(digits, one, 4, *extra)
    proc = train_cli(digits, two, 2, "train.sample_store=mmap", *extra, nproc=2)
    assert "each of 2 ranks reads its share" in proc.stderr
    assert losses(two) == pytest.approx(losses(one)[:2], rel=1e-5)
    assert_same_model(one, two, 2, codes=False)
    # resumed by 1 rank, from the store
    train_cli(digits, two, 4, "train.sample_store=mmap", *extra)
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert_same_model(one, two, 4)
