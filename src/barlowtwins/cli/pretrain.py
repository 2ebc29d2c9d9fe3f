"""``barlowtwins pretrain``: Barlow Twins pretraining from a preset, a YAML file and flags."""

from __future__ import annotations

import argparse
import sys

import yaml

from barlowtwins.data.bad_files import summary_line
from barlowtwins.data.datasets import DATASETS
from barlowtwins.runtime import distributed as D
from barlowtwins.training.autoconfig import plan_config
from barlowtwins.training.config import (
    PretrainConfig,
    add_config_flags,
    available_presets,
    derived_augmentation,
    resolve_values,
)
from barlowtwins.training.trainer import pretrain
from barlowtwins.transforms.multicrop import multicrop_from


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="pretrain a backbone with Barlow Twins",
                       description="Pretrain with Barlow Twins. Settings come from --preset, then --config, then "
                                   "flags; the resolved config is saved in the run folder. Running the same command "
                                   "again resumes from <out>/checkpoint.pth. Exit status: 0 finished (or --max-steps "
                                   "reached), 75 stopped early by a signal or --time-limit-minutes (run again to "
                                   "resume), 2 bad input, 1 training diverged.")
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(available_presets())}")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML file of config fields")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_config_flags(p, PretrainConfig, skip=("preset",))
    return p


def printed_config(cfg: PretrainConfig) -> str:
    """The config as YAML with every augmentation field resolved: a field left unset (None: the paper's value
    adapted to the image size and channels) shows the value the run will use, with a comment that it was derived.
    The text is valid input for ``--config``."""
    channels = DATASETS[cfg.dataset].channels if cfg.dataset in DATASETS else 3
    values = cfg.to_dict()
    resolved = derived_augmentation(cfg, channels)  # the values config.yaml records too (`save_config`)
    derived = list(resolved)
    values.update(resolved)
    if cfg.multicrop_count > 0:  # the small crops' size and scale the run will use
        mc = multicrop_from(cfg.multicrop_count, cfg.multicrop_size, cfg.multicrop_scale, cfg.image_size)
        assert mc is not None  # multicrop_from is None only for a count <= 0; this one is > 0
        for n, v in (("multicrop_size", mc.size), ("multicrop_scale", list(mc.scale))):
            if n not in values or values[n] in (None, 0):
                values[n] = v
                derived.append(n)
    lines = []
    for key, value in values.items():
        if isinstance(value, list):  # one line, as "crop_scale: [0.2, 1.0]"
            text = f"{key}: " + yaml.safe_dump(value, default_flow_style=True).strip()
        else:
            text = yaml.safe_dump({key: value}, sort_keys=False).rstrip("\n")
        if key in derived:
            text += f"  # derived from image_size {cfg.image_size}, {channels} channel(s)"
        lines.append(text)
    head = (f"# augmentation fields marked 'derived' were not set: they are the paper's values adapted to "
            f"{cfg.image_size} px, {channels}-channel images\n") if derived else ""
    return head + "\n".join(lines) + "\n"


def _main_process() -> bool:
    """Whether this process prints: a single process, or rank 0 of a launched job."""
    env = D.launcher_env()
    return env is None or env.get("rank") == 0


def run(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "config", "print_config")}
    values = resolve_values(args.preset, args.config, flags)
    cfg, note = plan_config(values)  # small images: no ImageNet recipe (the plan barlowtwins.pretrain makes too)
    if args.print_config:
        print((f"# {note}\n" if note else "") + printed_config(cfg), end="")
        return 0
    if note and _main_process():
        print(note, flush=True)
    summary = pretrain(cfg, fit=False)  # fitted above, with the flags as the explicit fields
    if _main_process():
        run_dir = summary["run_dir"]
        if summary.get("skipped"):  # every unreadable file of this session, named once
            print(f"warning: {summary_line(summary['skipped'])}", file=sys.stderr)
        if summary["finished"]:
            print(f"pretrained {summary['step']} steps in {summary['minutes']:.1f} min; "
                  f"backbone: {run_dir}/backbone.pth (and .safetensors)")
        elif summary["stopped_by"] == "max_steps":
            pass  # said by pretrain() (from Python too), with what the learning rate did
        else:
            print(f"stopped at step {summary['step']} of {summary['total_steps']} ({summary['stopped_by']}); "
                  f"run the same command again to resume from {run_dir}/checkpoint.pth; "
                  f"the backbone of step {summary['step']} is in {run_dir}/backbone.pth (and .safetensors)")
        plain_torchvision = not cfg.backbone.startswith("timm:") and cfg.stem == "standard" and cfg.width is None
        print(f"load it: barlowtwins.load_backbone({str(run_dir)!r})" + (
              f", or torchvision.models.{cfg.backbone}().load_state_dict(torch.load("
              f"{str(run_dir) + '/backbone.pth'!r}), strict=False)" if plain_torchvision else ""))
    # 0: finished (or --max-steps reached); GRACEFUL_STOP_EXIT (75): stopped early by a signal or the time limit
    # with a checkpoint written, so a wrapper script can tell "run it again" from "done".
    return summary["exit_status"]
