"""Collapse diagnostics of a trained run on a held-out batch.

On up to ``samples`` images of the run's evaluation split (test for the built-in data sets, val for labelled
folders; the training images when that is all there is), encoded without augmentation by the backbone (eval
mode) and the projector:

* the singular-value spectrum of the centred embeddings and backbone features (a collapsed run has a few large
  singular values and a cliff);
* the effective rank: RankMe (Garrido et al., 2023: exp of the entropy of the normalised singular values of
  the uncentred matrix) and the centred effective rank of Roy & Vetterli (2007), both from `evaluate.collapse`;
* the per-dimension standard deviation of the L2-normalised embeddings (collapse drives it to 0; embeddings
  spread over all D directions give about 1/sqrt(D));
* a 2-D map of the backbone features coloured by label: UMAP when ``umap-learn`` is installed, t-SNE from
  scikit-learn otherwise, PCA without either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from barlowtwins.data.bad_files import collect_bad_files, refuse_unreadable_in, warn_uncollected
from barlowtwins.data.datasets import build_dataset, default_val_split, image_folder
from barlowtwins.errors import BarlowTwinsError, ConfigError, DataError
from barlowtwins.evaluate.collapse import effective_rank, rankme, singular_values
from barlowtwins.evaluate.features import extract_features
from barlowtwins.models.barlow_twins import build_model
from barlowtwins.runtime.hardware import select_device
from barlowtwins.training.config import PretrainConfig, config_from_dict
from barlowtwins.transforms.spec import augment_config
from barlowtwins.weights.run_files import BACKBONE_NAME, CHECKPOINT_NAME, load_checkpoint
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights


@dataclass
class Diagnostics:
    samples: int
    split: str
    embedding_singular_values: np.ndarray | None  # (min(N, D),) descending; None without a projector
    feature_singular_values: np.ndarray  # (min(N, F),)
    rankme_embeddings: float | None
    rankme_features: float
    erank_embeddings: float | None
    erank_features: float
    embedding_std: np.ndarray | None  # (D,) per-dimension std of the L2-normalised embeddings
    feature_std: np.ndarray  # (F,) the same for the backbone features
    map_xy: np.ndarray  # (N, 2)
    map_method: str  # umap | t-SNE | PCA
    labels: np.ndarray | None  # (N,) or None when the data has no labels
    class_names: list[str]
    weights: str  # which file the weights came from
    skipped: list = dataclasses.field(default_factory=list)  # unreadable images left out: [{"file", "reason"}]

    @property
    def skipped_files(self) -> int:
        return len(self.skipped)


def centred_singular_values(z: torch.Tensor) -> np.ndarray:
    """The spectrum the report plots: `evaluate.collapse.singular_values` of the centred ``z``, as numpy."""
    return singular_values(z, centre=True).numpy()


def normalised_std(z: torch.Tensor) -> np.ndarray:
    z = torch.nn.functional.normalize(z.double(), dim=1)
    return z.std(0, unbiased=False).numpy()


def map_2d(x: np.ndarray, seed: int = 0, method: str = "auto") -> tuple[np.ndarray, str]:
    """(N, F) -> (N, 2) and the method used: UMAP, else t-SNE (scikit-learn), else PCA."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if method in ("auto", "umap") and n >= 4:
        try:
            import umap  # optional extra

            return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(x)), "UMAP"
        except ImportError:
            if method == "umap":
                raise
    if method in ("auto", "tsne") and n >= 4:
        try:
            from sklearn.manifold import TSNE

            perplexity = float(min(30.0, (n - 1) / 3))
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
            return np.asarray(xy), "t-SNE"
        except ImportError:
            if method == "tsne":
                raise
    c = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    xy = u[:, :2] * s[:2]
    if xy.shape[1] < 2:
        xy = np.concatenate([xy, np.zeros((n, 2 - xy.shape[1]))], axis=1)
    return xy, "PCA"


def _held_out(cfg, samples: int, labels_dir: str | None = None):
    """The images to measure, labelled where any labels are known: ``labels_dir`` (a labelled folder in the
    ImageNet layout), else the run's online-kNN data, else a labelled evaluation split of the run's data, else its
    training images."""
    name = cfg.dataset
    candidates = []
    if labels_dir is not None:
        val = default_val_split("folder")
        candidates = [(f"{val} of {labels_dir}", lambda: build_dataset("folder", labels_dir, val, False)),
                      (f"train of {labels_dir}", lambda: build_dataset("folder", labels_dir, "train", False))]
    elif name == "images" and cfg.knn_dataset and cfg.knn_dataset != "images":
        knn_val = cfg.knn_val_split or default_val_split(cfg.knn_dataset)
        candidates = [(f"{knn_val} (online kNN data)", lambda: build_dataset(
            cfg.knn_dataset, cfg.knn_data_dir or cfg.data_dir, knn_val, False))]
    if labels_dir is not None:
        pass  # the labels asked for, or an error: never silently other images
    elif name == "images":
        candidates += [("all images", lambda: image_folder(cfg.data_dir))]
    else:
        val = default_val_split(name)
        candidates += [(val, lambda: build_dataset(name, cfg.data_dir, val, False)),
                       (cfg.split, lambda: build_dataset(name, cfg.data_dir, cfg.split, False))]
    errors = []
    for split, make in candidates:
        try:
            ds = make()
        except (BarlowTwinsError, OSError, RuntimeError) as e:
            errors.append(str(e).splitlines()[0])
            continue
        n = min(samples, len(ds))
        idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(np.int64))  # spread over the set
        return ds.subset(torch.as_tensor(idx)), split
    raise DataError("; ".join(errors) or f"no data found for {name}")


def run_diagnostics(run_dir: str | Path, samples: int = 512, device: str = "cpu", map_method: str = "auto",
                    seed: int = 0, strict_data: bool = False, labels_dir: str | None = None) -> Diagnostics:
    """Load the run's network (``checkpoint.pth``, else ``backbone.pth`` without projector) and measure it.

    An unreadable image among the samples is skipped (`barlowtwins.data.bad_files`): counted in ``skipped`` and
    listed in one warning line; ``strict_data=True`` refuses them first, before anything is encoded."""
    run = Path(run_dir)
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    try:
        saved = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {run / 'config.yaml'} ({e})") from None
    cfg = config_from_dict({k: v for k, v in saved.items() if k in known})
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.projector, stem=cfg.stem, width=cfg.width,
                        zero_init_residual=cfg.zero_init_residual, projector_bn=cfg.projector_bn, lambd=cfg.lambd,
                        terms=cfg.loss_terms)
    projector: torch.nn.Module | None = model.projector  # None: a backbone.pth without one
    if (run / CHECKPOINT_NAME).exists():
        model.load_state_dict(load_checkpoint(run / CHECKPOINT_NAME)["model"])
        weights = CHECKPOINT_NAME
    elif (run / BACKBONE_NAME).exists():
        load_backbone_weights(model.backbone, load_backbone_state(run / BACKBONE_NAME))
        projector, weights = None, BACKBONE_NAME
    else:
        raise DataError(f"{run} has no checkpoint.pth or backbone.pth yet")
    dev = select_device(device)
    model.to(dev).eval()
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise ConfigError(f"--labels {labels_dir} is not a folder; give a labelled folder (<dir>/train/<class>/...)")
    data, split = _held_out(cfg, samples, labels_dir)
    if strict_data:
        refuse_unreadable_in(data)
    aug = augment_config(cfg.image_size, getattr(data, "channels", 3), **cfg.augment_overrides())
    with collect_bad_files() as bad:
        feats, labels = extract_features(model.backbone, data, image_size=cfg.image_size, device=dev,
                                         batch_size=256, mean=aug.mean, std=aug.std, workers=0)
    warn_uncollected(bad)
    with torch.no_grad():  # projector in eval mode (BN running statistics), as `BarlowTwins.embed` in eval
        emb = projector(feats.to(dev)).float().cpu() if projector is not None else None
    labels_np = labels.numpy()
    has_labels = bool((labels_np >= 0).any())
    xy, method = map_2d(feats.numpy(), seed, map_method)
    return Diagnostics(
        samples=len(feats), split=split,
        embedding_singular_values=centred_singular_values(emb) if emb is not None else None,
        feature_singular_values=centred_singular_values(feats),
        rankme_embeddings=rankme(emb) if emb is not None else None, rankme_features=rankme(feats),
        erank_embeddings=effective_rank(emb) if emb is not None else None, erank_features=effective_rank(feats),
        embedding_std=normalised_std(emb) if emb is not None else None, feature_std=normalised_std(feats),
        map_xy=xy, map_method=method, labels=labels_np if has_labels else None,
        class_names=list(getattr(data, "classes", []) or []), weights=weights, skipped=bad.as_list())
