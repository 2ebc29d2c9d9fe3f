"""`barlowtwins env`: versions, optional extras, devices and data sets, as text or one JSON object; no GPU needed."""

import json

import torch

from barlowtwins.cli import main


def test_env_runs_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("barlowtwins ")
    for word in ("python", "torch", "torchvision", "cuda        no", "device      cpu", "workers", "compile",
                 "fashion-mnist", "matplotlib", "tensorboard"):
        assert word in out, word


def test_env_json_is_one_object(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert info["cuda"]["devices"] == [] and info["default_device"] == "cpu"
    assert info["workers"]["default"] >= 1 and info["cpu"]["usable"] >= 1
    assert set(info["optional"]) >= {"matplotlib", "tensorboard", "umap-learn", "scikit-learn"}


def test_env_text_and_json_say_the_same(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert info["torch"] in text and info["python"].split()[0] in text
    assert str(info["workers"]["default"]) in text
