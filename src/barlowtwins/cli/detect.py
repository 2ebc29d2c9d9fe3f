"""``barlowtwins detect``: object-detection transfer (Faster R-CNN C4 on VOC, Mask R-CNN on COCO)."""

from __future__ import annotations

import argparse
import json

import torch

from barlowtwins.cli.common import (
    add_backbone_args,
    add_strict_data_arg,
    leaves_process_group,
    report_skipped,
    setup_backbone,
)
from barlowtwins.data.bad_files import refuse_unreadable
from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.detection.data import coco_detection, coco_layout, voc_detection
from barlowtwins.evaluate.detection.model import build_detector
from barlowtwins.evaluate.detection.protocol import DetectionRun, run_detection, standard_schedule
from barlowtwins.evaluate.results import result_path, write_result
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import check_writable
from barlowtwins.runtime.hardware import usable_cpus

MIN_SIZES = {"voc": tuple(range(480, 801, 32)), "coco": tuple(range(640, 801, 32))}


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="object detection / instance segmentation transfer",
                       description="Fine-tune a Faster R-CNN (Mask R-CNN with --task instance-segmentation) whose "
                                   "backbone starts from the checkpoint, with every stage and its BatchNorm trained "
                                   "(synchronised under torchrun), on the standard schedule: VOC07+12 24k iterations, "
                                   "COCO 1x 90k, batch 16, lr 0.02, x0.1 at 3/4 and 11/12 of the way (VOC) or 2/3 "
                                   "and 8/9 (COCO); --iterations scales it. Reports AP, AP50 and AP75.")
    add_backbone_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, choices=("voc", "coco"),
                   help="voc: VOCdevkit layout; coco: annotation JSON + image folder")
    g.add_argument("--data-dir", default=None,
                   help="voc: the folder holding VOCdevkit/ (or VOC2007/...); coco: the folder holding "
                        "annotations/instances_{train,val}2017.json, train2017/ and val2017/")
    g.add_argument("--train-sets", default="2007-trainval,2012-trainval", help="voc: <year>-<split> sets to train on")
    g.add_argument("--test-sets", default="2007-test", help="voc: sets to test on")
    g.add_argument("--train-ann", default=None, help="coco: training annotation file")
    g.add_argument("--train-images", default=None, help="coco: training image folder")
    g.add_argument("--test-ann", default=None, help="coco: test annotation file")
    g.add_argument("--test-images", default=None, help="coco: test image folder")
    add_strict_data_arg(g)
    g = p.add_argument_group("detector")
    g.add_argument("--task", choices=("detection", "instance-segmentation"), default="detection",
                   help="instance-segmentation: Mask R-CNN (COCO layout only)")
    g.add_argument("--head", choices=("c4", "fpn"), default="c4",
                   help="c4: layer4 in the RoI head, as in the paper (default); fpn: torchvision's ResNet-FPN")
    g.add_argument("--iterations", type=int, default=None, help="default: 24000 (voc) or 90000 (coco)")
    g.add_argument("--batch-size", type=int, default=16, help="global batch (images)")
    g.add_argument("--lr", type=float, default=None, help="default: 0.02 x batch / 16")
    g.add_argument("--min-size", type=int, nargs="+", default=None,
                   help="shorter side; several = one at random per batch, the last for testing "
                        "(default: 480..800 step 32 for voc, 640..800 for coco)")
    g.add_argument("--max-size", type=int, default=1333, help="longer side cap")
    g.add_argument("--rois-per-image", type=int, default=512,
                   help="proposals sampled per training image for the RoI head (standard: 512)")
    g.add_argument("--log-every", type=int, default=20, help="iterations between loss lines")
    g.add_argument("--seed", type=int, default=0)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.iterations is not None and args.iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {args.iterations}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    if (args.min_size is not None and min(args.min_size) < 16) or args.max_size < 16:
        raise ConfigError("--min-size and --max-size must be at least 16 pixels")
    if args.rois_per_image < 1:
        raise ConfigError(f"--rois-per-image must be at least 1, got {args.rois_per_image}")
    if args.log_every < 1:
        raise ConfigError(f"--log-every must be at least 1, got {args.log_every}")
    if args.task == "instance-segmentation" and args.dataset != "coco":
        raise ConfigError("--task instance-segmentation needs masks: use --dataset coco (VOC detection has none)")
    if args.dataset == "voc" and not args.data_dir:
        raise ConfigError("--dataset voc needs --data-dir (the folder holding VOCdevkit/)")


def load_data(args: argparse.Namespace):
    """(train, test) data sets the flags name; raises DataError/ConfigError before any model is built."""
    if args.dataset == "voc":
        return (voc_detection(args.data_dir, args.train_sets, train=True),
                voc_detection(args.data_dir, args.test_sets, train=False))
    masks = args.task == "instance-segmentation"
    train_ann, train_images, test_ann, test_images = coco_layout(args.data_dir, args.train_ann, args.train_images,
                                                                 args.test_ann, args.test_images)
    train = coco_detection(train_ann, train_images, train=True, masks=masks)
    test = coco_detection(test_ann, test_images, train=False, masks=masks,
                          categories=json.loads(train_ann.read_text())["categories"])
    return train, test


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    _check(args)
    tag = ("segm" if args.task == "instance-segmentation" else "") + ("-random" if args.random_init else "")
    path = result_path("detection", args.dataset, args.checkpoint, args.output, tag.strip("-"))
    check_writable(path)  # before any work, not after it
    train, test = load_data(args)
    if args.strict_data:  # every image decodes, before any model is built
        refuse_unreadable(list(dict.fromkeys(str(r.file) for r in train.records + test.records)))
    setup = setup_backbone(args, warn_size=False)  # detection resizes by --min-size/--max-size
    if setup.device.type != "cuda":
        # Detection batches change shape every iteration; channels-last convolutions on the CPU then fall on
        # slow paths (many times slower than the default layout in our measurements).
        setup.backbone.to(memory_format=torch.contiguous_format)
    torch.manual_seed(args.seed)
    min_size = tuple(args.min_size) if args.min_size else MIN_SIZES[args.dataset]
    model = build_detector(setup.backbone, train.num_classes, head=args.head, task=args.task, min_size=min_size,
                           max_size=args.max_size, image_mean=setup.mean, image_std=setup.std,
                           rois_per_image=args.rois_per_image).to(setup.device)
    schedule = standard_schedule(args.dataset, args.iterations, args.batch_size, args.lr)
    workers = args.workers if args.workers is not None else min(4, usable_cpus())
    if D.is_main_process():
        print(f"{args.task} on {train.name} ({len(train)} images) -> {test.name} ({len(test)} images): "
              f"{args.head.upper()} head, {schedule.iterations} iterations at batch {schedule.batch_size}, "
              f"lr {schedule.lr:g} (x0.1 at {', '.join(map(str, schedule.steps)) or 'none'})")
    # Detectron2's schedules train in float32: "auto" keeps that here; --precision bf16 asks for autocast.
    amp_dtype = None if args.precision == "auto" else setup.amp_dtype
    run_cfg = DetectionRun(schedule=schedule, device=setup.device, amp_dtype=amp_dtype, workers=workers,
                           seed=args.seed, log_every=args.log_every,
                           log=lambda r: print(f"iteration {r['iteration']}: loss {r['loss']:.3f} lr {r['lr']:.4g}"))
    res = run_detection(model, train, test, run_cfg, task=args.task, head=args.head,
                        use_07_metric=all(s.strip().startswith("2007") for s in args.test_sets.split(",")))
    record = {"protocol": "detection", "dataset": args.dataset, "split": res.test_set, "train_split": res.train_set,
              "task": res.task, "head": res.head, "evaluation": res.evaluation,
              "hyperparameters": {"iterations": schedule.iterations, "batch_size": schedule.batch_size,
                                  "lr": schedule.lr, "steps": list(schedule.steps),
                                  "warmup_iters": schedule.warmup_iters, "weight_decay": schedule.weight_decay,
                                  "momentum": schedule.momentum, "min_size": list(min_size),
                                  "max_size": args.max_size, "rois_per_image": args.rois_per_image,
                                  "bn": "SyncBatchNorm" if D.world_size() > 1 else "BatchNorm (trainable)",
                                  "world_size": D.world_size(), "seed": args.seed,
                                  "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
                                  "history": res.history},
              "metrics": res.metrics, "per_class_AP50": res.per_class_AP50, "num_train": res.num_train,
              "num_test": res.num_test, "seconds": res.seconds, **setup.describe(),
              "skipped_files": res.skipped_files, "skipped": res.skipped}
    if D.is_main_process():
        write_result(record, path)
        m = res.metrics
        masks = f" mask AP {m['mask_AP']:.2f}" if "mask_AP" in m else ""
        print(f"detect {args.dataset} {res.test_set} ({res.head.upper()}, {schedule.iterations} it): "
              f"AP {m['AP']:.2f} AP50 {m['AP50']:.2f} AP75 {m['AP75']:.2f}{masks}  [{path}]")
        report_skipped(res.skipped)
    return 0
