"""The report's collapse diagnostics: the spectrum, per-dimension std and 2-D map against independent references,
and `run_diagnostics` on a run folder's backbone and held-out images."""

import numpy as np
import pytest
import torch
from conftest import trained_backbone

from barlowtwins.errors import ConfigError, DataError
from barlowtwins.report.diagnostics import centred_singular_values, map_2d, normalised_std, run_diagnostics
from barlowtwins.weights.save import write_run_backbone


def test_normalised_std_and_map_fallback():
    z = torch.randn(200, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zn = z / z.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(normalised_std(z), zn.numpy().std(0), rtol=1e-12)
    assert np.allclose(normalised_std(torch.ones(10, 4)), 0)  # collapse: every embedding the same
    xy, method = map_2d(z.numpy(), method="pca")
    assert method == "PCA" and xy.shape == (200, 2)
    c = z.numpy() - z.numpy().mean(0)
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.abs(c @ np.linalg.svd(c)[2][0]), rtol=1e-8)


def test_the_spectrum_is_that_of_the_centred_matrix():
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 3.0
    c = z.numpy() - z.numpy().mean(0)
    np.testing.assert_allclose(centred_singular_values(z), np.linalg.svd(c, compute_uv=False), rtol=1e-10)
    flat = centred_singular_values(torch.ones(20, 4, dtype=torch.float64))  # every row the same: nothing left
    assert np.allclose(flat, 0)


def test_a_map_of_fewer_than_two_directions_is_padded_to_two_columns():
    xy, method = map_2d(np.arange(6.0).reshape(6, 1), method="pca")
    assert method == "PCA" and xy.shape == (6, 2) and np.allclose(xy[:, 1], 0)
    xy, method = map_2d(np.random.default_rng(0).random((3, 5)))  # too few points for UMAP or t-SNE
    assert method == "PCA" and xy.shape == (3, 2)


@pytest.fixture
def backbone_run(tmp_path, fmnist_dir):
    """A run folder with backbone.pth and config.yaml only (no checkpoint), pretrained on the fake Fashion-MNIST."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"dataset": "fashion-mnist", "data_dir": str(fmnist_dir), "backbone": "resnet18", "stem": "small",
           "width": 8, "image_size": 16, "projector": "32-32"}
    (run / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    write_run_backbone(trained_backbone("resnet18", stem="small", width=8), run, cfg)
    return run


def test_diagnostics_of_a_backbone_on_its_held_out_split(backbone_run):
    d = run_diagnostics(backbone_run, samples=20, map_method="pca")
    assert d.weights == "backbone.pth" and d.split == "test" and d.samples == 20 and d.skipped_files == 0
    assert d.embedding_singular_values is None and d.rankme_embeddings is None  # no projector without a checkpoint
    assert len(d.feature_singular_values) == 20 and len(d.feature_std) == 64  # 20 images, 64 features
    assert np.all(np.diff(d.feature_singular_values) <= 1e-6) and 1 <= d.rankme_features <= 20
    assert d.map_xy.shape == (20, 2) and d.map_method == "PCA"
    assert d.labels is not None and set(d.labels.tolist()) <= set(range(10)) and len(set(d.labels.tolist())) > 5


def test_a_run_without_weights_or_with_a_bad_labels_folder_is_one_line(backbone_run, tmp_path):
    with pytest.raises(ConfigError, match="--labels .* is not a folder"):
        run_diagnostics(backbone_run, samples=8, labels_dir=str(tmp_path / "nope"))
    (backbone_run / "backbone.pth").unlink()
    (backbone_run / "backbone.safetensors").unlink()
    with pytest.raises(DataError, match="has no checkpoint.pth or backbone.pth yet"):
        run_diagnostics(backbone_run, samples=8)
