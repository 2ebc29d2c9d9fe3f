"""Up-front checks: the run folder, the online-kNN data and resume compatibility fail before any work."""

import os

import pytest
import yaml

from barlowtwins.errors import ConfigError, DataError
from barlowtwins.training import preflight
from barlowtwins.training.preflight import check_output_folder, check_resume


def test_output_folder(tmp_path, monkeypatch):
    check_output_folder(tmp_path / "new" / "run")  # creatable: fine, and nothing is created yet
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be created: .* is a file"):
        check_output_folder(tmp_path / "file" / "run")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight.tempfile, "mkstemp", read_only)  # root ignores chmod: simulate a read-only mount
    with pytest.raises(ConfigError, match=r"is not writable \(Permission denied\)"):
        check_output_folder(tmp_path / "ro")
    assert os.listdir(tmp_path) == ["file"]


def test_resume_compatibility_includes_the_seed(tmp_path):
    from barlowtwins.training.config import PretrainConfig

    saved = PretrainConfig(seed=3).to_dict()
    check_resume(saved, PretrainConfig(seed=3, epochs=5), tmp_path / "checkpoint.pth")  # epochs may change
    with pytest.raises(ConfigError, match=r"was started with seed=3 \(now 4\)"):
        check_resume(saved, PretrainConfig(seed=4), tmp_path / "checkpoint.pth")


def test_online_knn_data_is_checked_before_the_training_data(fmnist_dir, tmp_path, monkeypatch):
    from conftest import tiny_config

    from barlowtwins.training import run as R
    from barlowtwins.training import trainer as train

    scanned = []
    monkeypatch.setattr(R, "build_dataset", lambda *a, **k: scanned.append(a))
    with pytest.raises(DataError, match="does not exist"):
        train.pretrain(tiny_config(fmnist_dir, tmp_path / "r", knn_every=1, knn_dataset="folder",
                                   knn_data_dir=str(tmp_path / "missing")))
    assert scanned == [], "failed before the training data was read"
    assert not (tmp_path / "r").exists()


def test_resume_with_another_seed_keeps_the_run_folder(fmnist_dir, tmp_path):
    from conftest import tiny_config

    from barlowtwins.training.trainer import pretrain

    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=1))
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="seed=7 .now 8."):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", seed=8))
    assert (tmp_path / "r" / "config.yaml").read_text() == before
    assert yaml.safe_load(before)["seed"] == 7


