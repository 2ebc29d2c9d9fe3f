"""Crops of a drafted JPEG decode (the cpu path) are scaled by the exact DCT factor 1/2^k, not by the decoded
width over the full width (ceil(full / 2^k) / full), which shifts crops by up to 2^k source pixels."""

import numpy as np
from PIL import Image

from barlowtwins.transforms.params import SampleView, sample_uniforms, sample_views_from
from barlowtwins.transforms.pil import draft_scale, two_views, view
from barlowtwins.transforms.spec import augment_config


def test_draft_scale_is_the_dct_factor():
    assert draft_scale(101, 51) == 0.5 and draft_scale(101, 26) == 0.25 and draft_scale(101, 13) == 0.125
    assert draft_scale(100, 100) == 1.0 and draft_scale(64, 32) == 0.5


def test_two_views_of_a_drafted_decode_use_the_exact_scale():
    cfg = augment_config(16, blur_kernel=5)
    rng = np.random.default_rng(0)
    drafted = Image.fromarray(rng.integers(0, 256, (26, 51, 3), dtype=np.uint8))  # 101 x 52 at 1/2
    draws = sample_uniforms(cfg, 0, 0, [0])
    p1, p2 = sample_views_from(cfg, draws, 0, 52, 101)
    p1 = SampleView(p1, box=(10, 40, 40, 60))  # far right: a 0.505 scale moves it 0.3 px on the draft
    v1, v2 = two_views(drafted, (101, 52), p1, p2, cfg)
    assert np.array_equal(v1, np.array(view(drafted, p1, cfg, (0.5, 0.5))))
    assert np.array_equal(v2, np.array(view(drafted, p2, cfg, (0.5, 0.5))))
