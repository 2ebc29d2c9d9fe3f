"""Every extension point is one registry: the commands offer exactly its entries (flags, help, config choices),
an entry registered at run time is offered and used, and an unknown name is one line naming the choices, exit 2."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from barlowtwins.cli import build_parser, main
from barlowtwins.data.datasets import DATASETS, build_dataset
from barlowtwins.data.pipeline import (
    DATA_PATHS,
    CpuPath,
    DataPathSpec,
    build_pipeline,
    data_path_choices,
    register_data_path,
)
from barlowtwins.data.transfer import TRANSFER_DATASETS, TransferDataset, register_transfer_dataset
from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.protocols import LINEAR_PROTOCOLS
from barlowtwins.models.backbones import STEMS, create_backbone
from barlowtwins.models.loss import TERMS
from barlowtwins.runtime.files import save_atomic
from barlowtwins.training.config import PretrainConfig, choice_values
from barlowtwins.training.optim import OPTIMIZERS
from barlowtwins.transforms.spec import augment_config
from barlowtwins.weights.formats import EXPORT_FORMATS, ExportFormat, register_export_format
from barlowtwins.weights.save import backbone_state


@pytest.fixture
def restore_registries():
    """Registries as they were before the test, whatever it registered."""
    saved = [(r, dict(r)) for r in (DATA_PATHS, TRANSFER_DATASETS, LINEAR_PROTOCOLS, EXPORT_FORMATS, DATASETS)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def _action(command: str, flag: str):
    sub = build_parser()._command_parsers[command]
    return next(a for a in sub._actions if flag in a.option_strings)


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_the_commands_offer_exactly_the_registries():
    assert _action("export", "--format").choices == tuple(EXPORT_FORMATS)
    assert _action("transfer", "--dataset").choices == tuple(TRANSFER_DATASETS)
    for command in ("linear", "transfer"):
        assert _action(command, "--protocol").choices == tuple(LINEAR_PROTOCOLS)
    assert _action("bench", "--data-path").choices == tuple(DATA_PATHS)
    for command in ("bench", "export", "knn", "linear", "finetune", "transfer", "detect", "embed", "neighbors"):
        assert _action(command, "--stem").choices == STEMS, command


def test_the_config_choices_are_the_registries():
    meta = {f.name: f.metadata for f in dataclasses.fields(PretrainConfig)}
    assert choice_values(meta["dataset"]) == choice_values(meta["knn_dataset"]) == tuple(DATASETS)
    assert choice_values(meta["data_path"]) == data_path_choices() == ("auto", *DATA_PATHS)
    assert choice_values(meta["stem"]) == tuple(STEMS)
    assert choice_values(meta["loss_terms"]) == tuple(TERMS)
    assert choice_values(meta["optimizer"]) == tuple(OPTIMIZERS)


def test_help_texts_describe_every_entry(capsys):
    text = _help("export", capsys)
    for name, fmt in EXPORT_FORMATS.items():
        assert f"{name} ({fmt.suffix}): {' '.join(fmt.description.split())}" in text, name
    text = _help("transfer", capsys)
    for name, spec in TRANSFER_DATASETS.items():
        assert f"{name}: " in text and f"splits {spec.splits[0]}/{spec.splits[1]}" in text, name
    text = _help("linear", capsys)
    for name, spec in LINEAR_PROTOCOLS.items():
        assert f"{name}: {spec.description}" in text and f"{name} {spec.epochs}" in text, name
    text = _help("pretrain", capsys)
    assert "image folders: auto: device on CUDA, else cpu; " in text
    for name, spec in DATA_PATHS.items():
        assert f"{name}: {spec.description}" in text, name
    assert f"one of: {', '.join(OPTIMIZERS)}" in text and f"one of: {', '.join(DATASETS)}" in text


@pytest.mark.parametrize("argv,names", [
    (["export", "--checkpoint", "x.pth", "--output", "y", "--format", "zip"], EXPORT_FORMATS),
    (["transfer", "--data-dir", "d", "--dataset", "cub200"], TRANSFER_DATASETS),
    (["linear", "--protocol", "slow"], LINEAR_PROTOCOLS),
    (["transfer", "--data-dir", "d", "--dataset", "folder", "--protocol", "slow"], LINEAR_PROTOCOLS),
    (["bench", "--make-jpegs", "1", "--data-path", "gpu"], DATA_PATHS),
    (["knn", "--stem", "big"], STEMS),
])
def test_an_unknown_choice_is_one_line_naming_the_choices(argv, names, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "invalid choice" in err and all(n in err for n in names), err


def test_an_unknown_data_path_in_the_config_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--data-path", "gpu", "--out", str(tmp_path / "run"), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"choose {', '.join(data_path_choices())}" in err, err


def test_a_registered_export_format_is_offered_and_written(restore_registries, tmp_path, capsys):
    def write_names(job) -> str:
        job.output.write_text("\n".join(sorted(job.src.state)))
        return f"a list of {len(job.src.state)} tensor names"

    register_export_format(ExportFormat("names", write_names, ".txt", "the tensor names, one a line"))
    assert "names (.txt): the tensor names, one a line" in _help("export", capsys)
    torch.manual_seed(0)
    net = create_backbone("resnet18", width=8, stem="small")
    save_atomic(backbone_state(net), tmp_path / "backbone.pth")
    out = tmp_path / "backbone.txt"
    assert main(["export", "--checkpoint", str(tmp_path / "backbone.pth"), "--format", "names",
                 "--output", str(out)]) == 0
    written = out.read_text().splitlines()
    assert written == sorted(k for k in net.state_dict() if not k.startswith("fc."))
    assert f"as a list of {len(written)} tensor names" in capsys.readouterr().out


class _CountingPath(CpuPath):
    """The cpu path, counting the epochs it is asked for."""

    kind = "counting"

    def epoch(self, epoch: int = 0, start: int = 0):
        self.epochs = getattr(self, "epochs", 0) + 1
        return super().epoch(epoch, start)


def test_a_registered_data_path_is_offered_accepted_and_built(restore_registries, image_tree, tmp_path, capsys):
    register_data_path(DataPathSpec("counting", _CountingPath, "cpu views, counted"))
    assert _action("bench", "--data-path").choices == ("cpu", "device", "counting")
    assert "counting: cpu views, counted" in _help("pretrain", capsys)
    assert PretrainConfig(data_path="counting").data_path == "counting"
    files = build_dataset("folder", image_tree, "train")
    pipe = build_pipeline(files, augment_config(16), batch_size=4, seed=0, data_path="counting", workers=0)
    assert isinstance(pipe, _CountingPath)
    batches = list(pipe.epoch(0))
    assert pipe.epochs == 1 and len(batches) == len(pipe) == 3
    x1, x2 = pipe.views(batches[0][0], 0)
    assert x1.shape == x2.shape == (4, 3, 16, 16)
    with pytest.raises(ConfigError, match="did you mean counting"):
        PretrainConfig(data_path="countin")


def test_auto_is_not_a_data_path():
    with pytest.raises(ValueError, match="auto"):
        register_data_path(DataPathSpec("auto", CpuPath, "no"))
    assert "auto" not in DATA_PATHS


def test_transfer_offers_a_registered_data_set(restore_registries, capsys):
    register_transfer_dataset(TransferDataset("flowers", lambda root, split, image_root: None, ("train", "test"),
                                              "linear", "Oxford Flowers in my layout"))
    assert _action("transfer", "--dataset").choices[-1] == "flowers"
    assert "flowers: Oxford Flowers in my layout [linear, splits train/test]" in _help("transfer", capsys)


def test_cli_modules_import_the_package_at_module_top():
    """Package imports inside a command's functions hide its dependencies; only optional extras stay lazy."""
    lazy = ("timm", "onnx", "onnxruntime", "onnxscript", "pycocotools", "matplotlib", "sklearn", "tensorboard",
            "pyarrow")
    cli = Path(__file__).resolve().parents[2] / "src" / "barlowtwins" / "cli"
    for path in sorted(cli.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    assert module.split(".")[0] in lazy, f"{path.name}:{node.lineno} imports {module} in {fn.name}"
