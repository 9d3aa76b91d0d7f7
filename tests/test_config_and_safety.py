"""Bad settings fail before any work, naming the valid values; nothing loaded from disk can run code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import PLAIN, run_small_benchmark

from benchmark.config import RunConfig, load_toml
from benchmark.training.heads import load_head
from features.cache import FeatureCache


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--backbones", "ResNet51"], ["ResNet50", "MobileNetV2", "InceptionResNetV2"]),
        (["--lr", "-0.001"], ["--lr must be positive"]),
        (["--lr", "0"], ["--lr must be positive"]),
        (["--dropout", "1.0"], ["[0, 1)"]),
        (["--dropout", "-0.1"], ["[0, 1)"]),
        (["--backbones", "InceptionV3", "--image-size", "64"], ["minimum of 75 px"]),
        (["--data", "/no/such/folder"], ["/no/such/folder is not a folder"]),
        (["--min-image-side", "-1"], ["--min-image-side must be 0 or more"]),
        (["--select-by", "normal_vs_pneumonia.kappa"], ["accuracy", "sensitivity", "auc"]),
        (["--weights", "imagenet21k"], ["imagenet, none or an existing folder"]),
    ],
)
def test_a_bad_value_fails_before_any_work_naming_valid_values(kermany_root, tmp_path, capsys, args, names):
    assert run_small_benchmark(kermany_root, tmp_path, *args, **PLAIN) == 2
    err = capsys.readouterr().err
    for name in names:
        assert name in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args", [["--dropuot", "0.2"], ["--leakage", "ignore"], ["--precision", "int4"], ["--image-size", "big"]]
)
def test_an_unknown_flag_or_choice_fails_with_the_usage(kermany_root, tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        run_small_benchmark(kermany_root, tmp_path, *args, **PLAIN)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: run_benchmark.py" in err and "--dropout" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("learning_rate = [1e-3]\n", "unknown key(s) learning_rate"),
        ("[grid]\nlr = [1e-3]\n", "unknown key(s) grid"),
        ('lr = "fast"\n', "lr must be a number or a list of them"),
        ("epochs = 2.5\n", "epochs must be an integer"),
        ("standardize = 1\n", "standardize must be true or false"),
        ("image_size = [224, true]\n", "image_size must be an integer or a list of them"),
        ("!!python/object/apply:os.system ['touch pwned']\n", "is not valid TOML"),
    ],
)
def test_a_bad_config_file_fails_naming_what_is_valid(kermany_root, tmp_path, capsys, toml, message):
    config = tmp_path / "run.toml"
    config.write_text(toml)
    assert run_small_benchmark(kermany_root, tmp_path, "--config", str(config), **PLAIN) == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown key" in message:
        assert "valid keys:" in err and "dropout" in err and "lr" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "pwned").exists()


def test_a_good_config_file_reaches_the_dataclass(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text('lr = [1e-4, 1e-3]\ndropout = 0.3\nbackbones = "VGG16"\nlimit_per_class = 5\n')
    run = RunConfig(**load_toml(config))
    run.validate()
    assert run.lr == (1e-4, 1e-3) and run.dropout == (0.3,) and run.backbones == ("VGG16",)


class _Payload:
    """Unpickling this creates a marker file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_cache_file_is_refused_and_runs_nothing(tmp_path: Path):
    cache = FeatureCache(tmp_path / "cache")
    entry = cache.entry("VGG16", "k")
    entry.mkdir(parents=True)
    marker = tmp_path / "pwned"
    np.save(entry / "features.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    digest = hashlib.sha256((entry / "features.npy").read_bytes()).hexdigest()
    # The manifest matches the file, so only allow_pickle=False stands between the file and the unpickler.
    (entry / "manifest.json").write_text(json.dumps({"sha256": digest, "shape": [1]}))
    assert cache.load("VGG16", "k") is None
    assert not marker.exists()


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path: Path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "head.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_head(path)
