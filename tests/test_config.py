"""Configuration: composition, presets, validation and the saved resolved config."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from meg_lightning.compose import GROUPS, load_config
from meg_lightning.config import config_dir, config_hash, save_resolved, schema
from meg_lightning.errors import ConfigError


def test_every_yaml_key_is_in_the_schema():
    d = config_dir()
    full = OmegaConf.structured(schema(GROUPS))
    files = [*(d / "presets").glob("*.yaml"), *d.glob("*.yaml")]
    assert d / "demo.yaml" in files
    for f in files:
        OmegaConf.merge(full, OmegaConf.load(f))  # raises on an unknown key or bad type


def test_member_settings_are_config_groups_and_written_once():
    """The settings of a registered channel model or codec architecture are its own dataclass
    (``channel.<kind>.*``, ``codec.<arch>.*``): nothing else declares them."""
    from meg_lightning.channels import CHANNELS
    from meg_lightning.codecs import ARCHS
    from meg_lightning.registry import has_settings, settings_of

    cfg = load_config(["codec.arch=adaptive", "codec.adaptive.width=16"])
    assert cfg.codec.adaptive.width == 16 and cfg.codec.arch == "adaptive"
    for section, registry in (("codec", ARCHS), ("channel", CHANNELS)):
        for name, cls in registry.items():
            if has_settings(cls):
                assert isinstance(getattr(getattr(cfg, section), name), settings_of(cls))
    # the shared sections hold no member's own setting
    from meg_lightning.config import CodecConfig
    import dataclasses

    shared = {f.name for f in dataclasses.fields(CodecConfig)}
    own = {f.name for _, cls in ARCHS.items() for f in dataclasses.fields(settings_of(cls))}
    assert not shared & own


def test_presets():
    tiny = load_config([])
    assert tiny.model == "tiny" and tiny.generation.height == 64 and tiny.codec.arch == "mlp"
    paper = load_config(["model=paper"])
    g = paper.generation
    assert (g.height, g.width, g.num_inference_steps, g.guidance_scale) == (512, 512, 50, 7.5)
    c = paper.codec
    assert (c.fc, c.arch, c.lr, paper.data.batch_size, paper.channel.snr_db) == (0.5, "paper", 1e-3, 1, 20.0)
    assert paper.trainer["max_epochs"] == 200
    hub = load_config(["model=someone/my-sd15"])  # a hub id takes the paper preset
    assert hub.preset == "paper" and hub.generation.height == 512


def test_overrides_win_and_trainer_passes_through():
    cfg = load_config(["codec.fc=0.3", "trainer.max_epochs=3", "trainer.precision=bf16-mixed"])
    assert cfg.codec.fc == 0.3 and cfg.trainer["max_epochs"] == 3
    assert cfg.trainer["precision"] == "bf16-mixed"


@pytest.mark.parametrize("override, key", [
    ("codec.fcc=0.5", "codec.fcc"),                          # unknown key
    ("codec.fc=abc", "codec.fc"),                            # wrong type
    ("codec.fc=0", "codec.fc"),                              # out of range
    ("codec.fc=1.5", "codec.fc"),
    ("generation.num_inference_steps=-5", "generation.num_inference_steps"),
    ("channel.snr_db=nan", "channel.snr_db"),
    ("channel.kind=rician", "channel.kind"),
    ("data.val_fraction=0.6", "data.val_fraction"),
    ("logger=mlflow", "logger"),
    ("ppo.p_max_mw=0", "ppo.p_max_mw"),
    ("ppo.reward=ssim", "ppo.reward"),
    ("eval.schemes=[meg,jpeg2000]", "eval.schemes"),
])
def test_bad_values_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(["data.val_fraction=0.1", override] if "val_fraction" not in override
                    else [override, "data.test_fraction=0.5"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(key) and "expected" in msg


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(["codec.fc"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(["codec.fc=0.7"])
    path = save_resolved(cfg, tmp_path)
    again = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(type(cfg)), OmegaConf.load(path)))
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(["codec.fc=0.5"])) != config_hash(cfg)


@pytest.mark.parametrize("overrides", [
    [],
    ["model=paper", "channel.train_snr_db=[-3,4]", "eval.scheme_fcs={meg: [0.25,0.5]}",
     'eval.codec_checkpoints={"0.5": a.ckpt}', "ppo.fig10_powers=[1,2]", "codec.paper.hidden=64"],
])
def test_to_dict_is_omegaconfs_container(overrides):
    """to_dict is dataclasses.asdict for speed; it must stay what OmegaConf gives (the resolved
    config files, checkpoints and hashes are written from it)."""
    from omegaconf import OmegaConf

    from meg_lightning.config import to_dict

    cfg = load_config(overrides)
    ref = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    got = to_dict(cfg)
    assert got == ref
    assert json.dumps(got, sort_keys=True) == json.dumps(ref, sort_keys=True)
