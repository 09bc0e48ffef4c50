import pytest
import yaml

from deepsdf_ad.config import Config, ConfigError, load_config, save_config
from tests.helpers import REPO, assert_one_line_error, cli


@pytest.mark.parametrize("name", ["deepsdf_chairs", "shapes_small"])
def test_presets_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.dim == 3


def test_deepsdf_chairs_matches_published_specs():
    cfg = load_config(REPO / "configs" / "deepsdf_chairs.yaml")
    assert cfg.model.decoder.hidden == (512,) * 8 and cfg.model.decoder.latent_in == (4,)
    assert cfg.model.latent.size == 256 and cfg.train.samples_per_shape == 16384
    assert cfg.train.shapes_per_batch == 64 and cfg.train.clamp == 0.1 and cfg.train.epochs == 2001
    assert cfg.train.lr_decoder.initial == 5e-4 and cfg.train.lr_latent.initial == 1e-3
    assert cfg.train.lr_decoder.at(499, 2001) == 5e-4 and cfg.train.lr_decoder.at(500, 2001) == 2.5e-4


def test_overrides_and_types():
    cfg = load_config(None, ["train.epochs=7", "model.decoder.hidden=[16, 16]", "model.decoder.latent_in=[1]",
                             "model.latent.size=8", "train.lr_decoder.initial=0.01"])
    assert cfg.train.epochs == 7 and cfg.model.decoder.hidden == (16, 16)
    assert cfg.train.lr_decoder.initial == 0.01
    # YAML 1.1 reads 5e-3 (no dot) as a string; an override means the number
    assert load_config(None, ["train.lr_latent.initial=5e-3"]).train.lr_latent.initial == 0.005


@pytest.mark.parametrize("override,needle", [
    ("train.epochz=3", "unknown config key 'train.epochz'"),
    ("nope=1", "unknown config key 'nope'"),
    ("train.epochs=abc", "must be an integer"),
    ("model.latent.source=pointnt", "unknown latent source 'pointnt'; known: table"),
    ("dim=4", "'dim' must be 2 or 3"),
    ("novalue", "use key=value"),
    ("model.decoder.hidden=[64,64,64,64,64]", "must be wider than code"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_save_is_plain_yaml_and_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=5"])
    save_config(cfg, tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert "!!python" not in text
    assert yaml.safe_load(text)["train"]["epochs"] == 5
    assert load_config(tmp_path / "c.yaml") == cfg
    assert isinstance(cfg, Config)


def test_presets_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from deepsdf_ad.config import EXPERIMENTS, PRESETS, find_preset, preset_names

    monkeypatch.chdir(tmp_path)  # outside the repository: configs/ is not in the working folder
    small = PRESETS / "shapes_small.yaml"
    assert find_preset("shapes_small") == small and find_preset("shapes_small.yaml") == small
    assert find_preset("configs/shapes_cpu.yaml") == PRESETS / "shapes_cpu.yaml"  # the repository path
    assert find_preset("ad_vs_ae_digits", EXPERIMENTS) == PRESETS / EXPERIMENTS / "ad_vs_ae_digits.yaml"
    scenes = PRESETS / EXPERIMENTS / "scenes.yaml"
    assert find_preset("configs/experiments/scenes.yaml", EXPERIMENTS) == scenes
    assert load_config("shapes_small") == load_config(REPO / "configs" / "shapes_small.yaml")
    assert "shapes_small" in preset_names() and "ad_vs_ae_shapes" in preset_names(EXPERIMENTS)
    assert PRESETS.resolve() == (REPO / "configs").resolve()  # one folder: the package's link to configs/
    own = tmp_path / "shapes_small.yaml"  # a file of that name in the working folder wins: a path is a path
    own.write_text("train: {epochs: 3}\n")
    assert load_config("shapes_small.yaml").train.epochs == 3
    assert load_config("shapes_small").train.epochs == 300


def test_unknown_preset_is_one_line_listing_the_presets(tmp_path):
    from deepsdf_ad.config import preset_names

    with pytest.raises(ConfigError, match=r"unknown preset 'shapes_smal'; presets: .*shapes_small"):
        load_config("shapes_smal")
    with pytest.raises(ConfigError, match=r"none\.yaml: config file not found; presets: .*shapes_small"):
        load_config(tmp_path / "none.yaml")
    proc = cli("train", "--config", "shapes_smal", "--data", tmp_path / "d", "--out", tmp_path / "r")
    assert_one_line_error(proc, "unknown preset 'shapes_smal'", ", ".join(preset_names()))
    proc = cli("experiment", "ad_vs_ae_digitz", "--data", tmp_path / "d", "--out", tmp_path / "e")
    assert_one_line_error(proc, "unknown preset 'ad_vs_ae_digitz'; experiment presets: ad_vs_ae_digits")
