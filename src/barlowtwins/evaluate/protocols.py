"""The linear protocols as functions of (backbone, train set, test set), shared by ``linear`` and ``transfer``.

Each returns ``(metrics, hyperparameters)`` ready for a result record.
"""

from __future__ import annotations

import torch

from .backbone import EvalSetup


def linear_fast(setup: EvalSetup, train, val, *, names: tuple[str, str, str], epochs: int = 50, lrs=None,
                wds=None, holdout: float = 0.1, flip: bool = False, seed: int = 0, batch_size: int = 256,
                workers: int | None = None):
    """Cached features + a (lr x wd) grid of linear classifiers trained at once (see `linear.fast_linear_probe`).

    ``names`` = (data set, train split, test split), which name the feature cache entries.
    """
    from .linear import DEFAULT_LRS, DEFAULT_WDS, fast_linear_probe

    kw = dict(batch_size=batch_size, workers=workers)
    ftr, ytr = setup.features(train, names[0], names[1], **kw)
    fte, yte = setup.features(val, names[0], names[2], **kw)
    groups = None
    if flip:
        mirrored, _ = setup.features(train, names[0], names[1], mirror=True, **kw)
        groups = torch.arange(len(ytr)).repeat(2)
        ftr, ytr = torch.cat([ftr, mirrored]), torch.cat([ytr, ytr])
    num_classes = int(max(ytr.max(), yte.max())) + 1
    res = fast_linear_probe(ftr, ytr, fte, yte, num_classes, lrs=lrs or DEFAULT_LRS, wds=wds or DEFAULT_WDS,
                            epochs=epochs, holdout=holdout, seed=seed, device=setup.device, train_groups=groups)
    hyper = {"epochs": epochs, "lr": res.lr, "weight_decay": res.weight_decay, "holdout": holdout,
             "holdout_top1": res.holdout_top1, "flip": flip, "grid": res.grid}
    return {"top1": res.top1, "top5": res.top5}, hyper


def linear_paper(setup: EvalSetup, train, val, *, epochs: int = 100, batch_size: int = 256, lr: float = 0.3,
                 weight_decay: float = 1e-6, seed: int = 0, workers: int | None = None, log=print):
    """The official linear protocol; raises if the backbone changed in any way during training."""
    from .classifier import ClassifierRun, assert_unchanged, new_linear_head, snapshot, train_classifier

    num_classes = max(train.num_classes, val.num_classes)
    head = new_linear_head(setup.backbone_features, num_classes).to(setup.device)
    setup.backbone.requires_grad_(False)
    before = snapshot(setup.backbone)
    scaled_lr = lr * batch_size / 256
    run = ClassifierRun(epochs=epochs, batch_size=batch_size, image_size=setup.image_size, device=setup.device,
                        amp_dtype=setup.amp_dtype, mean=setup.mean, std=setup.std, workers=workers, seed=seed,
                        log=(lambda r: log(f"epoch {r['epoch']}: top-1 {r['val_top1']:.2f} top-5 {r['val_top5']:.2f} "
                                           f"loss {r['train_loss']:.3f}")) if log else None)
    res = train_classifier(setup.backbone, head, train, val, [{"params": head.parameters(), "lr": scaled_lr}], run,
                           freeze_backbone=True, weight_decay=weight_decay)
    assert_unchanged(setup.backbone, before)
    hyper = {"epochs": epochs, "batch_size": batch_size, "lr": scaled_lr, "weight_decay": weight_decay,
             "momentum": 0.9, "schedule": "cosine", "history": run.history, "backbone_unchanged": True}
    return {"last": res["last"], "best": res["best"]}, hyper
