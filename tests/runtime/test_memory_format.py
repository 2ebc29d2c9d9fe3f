"""Channels-last only where it is safe: never on MPS, and on the CPU not for convolutions narrower than 16."""

import subprocess
import sys
import textwrap

import torch

from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.memory_format import as_input_format, narrowest_conv, use_channels_last


def test_the_choice_per_device_and_width():
    narrow, wide = create_backbone("resnet18", stem="small", width=8), create_backbone("resnet18", width=16)
    assert narrowest_conv(narrow) == 8 and narrowest_conv(wide) == 16
    assert not use_channels_last(narrow, "cpu") and use_channels_last(wide, "cpu")
    assert use_channels_last(narrow, "cuda") and not use_channels_last(wide, "mps")
    assert not use_channels_last(wide, "cpu", wanted=False)
    assert use_channels_last(torch.nn.Linear(2, 2), "cpu")


def test_a_width_8_network_trains_at_an_odd_batch_size_on_the_cpu(fmnist_dir, tmp_path):
    """The crash this guards against aborts the whole process, so the run happens in a child process: a width-8
    ResNet-18 at batch 3 (channels-last would abort with a heap corruption in oneDNN's backward)."""
    script = textwrap.dedent(f"""
        from barlowtwins.training.config import PretrainConfig
        from barlowtwins.training.trainer import pretrain
        cfg = PretrainConfig(dataset="fashion-mnist", data_dir={str(fmnist_dir)!r}, image_size=32, backbone="resnet18",
                             stem="small", width=8, projector="32-32", epochs=1, batch_size=3, progress=False,
                             out={str(tmp_path / "r")!r}, max_steps=4, warmup_epochs=0)
        print("step", pretrain(cfg)["step"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "step 4" in done.stdout, done.stderr[-2000:]


def test_inputs_follow_the_models_format():
    from barlowtwins.runtime.memory_format import is_channels_last

    net = create_backbone("resnet18", width=16)
    assert not is_channels_last(net)
    net.to(memory_format=torch.channels_last)
    assert is_channels_last(net) and not is_channels_last(torch.nn.Linear(2, 2))


def test_evaluation_keeps_a_narrow_backbone_in_nchw_on_the_cpu():
    from barlowtwins.evaluate.backbone import load_eval_backbone
    from barlowtwins.runtime.memory_format import is_channels_last

    narrow = load_eval_backbone(None, random_init=True, backbone="resnet18", stem="small", width=8, device="cpu")
    wide = load_eval_backbone(None, random_init=True, backbone="resnet18", stem="small", width=16, device="cpu")
    assert not is_channels_last(narrow.backbone) and is_channels_last(wide.backbone)


def test_a_batch_is_put_in_the_networks_format_whatever_strides_it_came_with():
    """The CPU data path's views are permuted height-width-channel decodes: channels-last strides. A network kept
    in NCHW must get NCHW, or its convolutions run channels-last after all."""
    hwc = torch.rand(2, 5, 6, 3)
    x = hwc.permute(0, 3, 1, 2)  # (B, C, H, W) with channels-last strides, as the loader makes them
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    nchw = as_input_format(x, channels_last=False)
    assert nchw.is_contiguous() and torch.equal(nchw, x)
    cl = as_input_format(torch.rand(2, 3, 5, 6), channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    already = torch.rand(2, 3, 5, 6)
    assert as_input_format(already, channels_last=False) is already  # no copy when the format is right
    flat = torch.rand(4, 7).t()
    assert as_input_format(flat, channels_last=True).is_contiguous()


def test_the_cpu_paths_views_reach_a_narrow_network_in_nchw(image_tree, tmp_path):
    """The trainer hands the network its own format: a width-8 ResNet on the CPU (kept NCHW) gets NCHW views from
    the CPU data path (a channels-last input would run oneDNN's channels-last backward, which segfaulted a
    width-8 ResNet-18 at 224 px, batch 16)."""
    from barlowtwins.runtime import distributed as D
    from barlowtwins.training.config import PretrainConfig
    from barlowtwins.training.trainer import Trainer

    cfg = PretrainConfig(dataset="images", data_dir=str(image_tree / "train"), data_path="cpu", image_size=32,
                         backbone="resnet18", stem="small", width=8, projector="32-32", epochs=1, batch_size=4,
                         workers=0, progress=False, out=str(tmp_path / "r"), time_budget_minutes=0)
    t = Trainer(cfg, D.DistInfo())
    try:
        assert not t.run_parts.channels_last
        images = next(iter(t.run_parts.pipeline.epoch(0)))[0]
        raw = t.run_parts.pipeline.all_views(images, 0)
        assert any(not v.is_contiguous() for v in raw)  # the path's own strides: what made the bug possible
        views = t._views(images)
        assert len(views) == 2 and all(v.is_contiguous() for v in views)
    finally:
        t.run_parts.pipeline.close()
