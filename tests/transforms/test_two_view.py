"""The torchvision reference: `TwoViewTransform` built from an image size or a config, on PIL images and uint8
tensors, and its steps in the spec's order with each view's probabilities."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from barlowtwins.transforms.spec import augment_config
from barlowtwins.transforms.two_view import TwoViewTransform, view_transform


def check_views(views, size):
    v1, v2 = views
    assert v1.shape == v2.shape == (3, size, size) and v1.dtype == v2.dtype == torch.float32
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()
    assert not torch.equal(v1, v2)  # two different random views


def noise_image(h=40, w=50):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("make", [lambda: TwoViewTransform(image_size=32), lambda: TwoViewTransform(32),
                                  lambda: TwoViewTransform(augment_config(32))])
def test_on_a_pil_image_and_a_uint8_tensor(make):
    torch.manual_seed(0)
    t = make()
    assert t.cfg == augment_config(32)
    check_views(t(Image.fromarray(noise_image())), 32)
    check_views(t(torch.from_numpy(noise_image()).permute(2, 0, 1).contiguous()), 32)


def test_overrides_and_channels():
    t = TwoViewTransform(image_size=28, channels=1, hue=0.05, crop_scale=[0.5, 1.0])
    assert t.cfg == augment_config(28, channels=1, hue=0.05, crop_scale=(0.5, 1.0))
    gray = torch.from_numpy(noise_image(28, 28)[..., :1].copy()).permute(2, 0, 1).contiguous()  # (1, 28, 28)
    check_views(t(gray), 28)  # one channel in, three out (T.RGB)
    t = TwoViewTransform(augment_config(64), solarize_p=(0.0, 0.0))
    assert t.cfg == augment_config(64, solarize_p=(0.0, 0.0))
    assert not any(isinstance(s, T.RandomSolarize) for s in t.t2.transforms)
    with pytest.raises(ValueError, match="unknown augmentation field"):
        TwoViewTransform(image_size=32, blurr=1.0)


def test_steps_follow_the_spec_with_each_views_probabilities():
    cfg = augment_config(96)
    kinds = [type(s) for s in view_transform(cfg, 0).transforms]
    assert kinds == [T.ToImage, T.RGB, T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomApply, T.RandomGrayscale,
                     T.GaussianBlur, T.ToDtype, T.Normalize]  # view 1: blur always, never solarised
    v2 = view_transform(cfg, 1).transforms
    assert isinstance(v2[6], T.RandomApply) and v2[6].p == 0.1 and isinstance(v2[6].transforms[0], T.GaussianBlur)
    assert isinstance(v2[7], T.RandomSolarize) and v2[7].p == 0.2


def test_one_way_to_ask_for_the_view_size():
    """``TwoViewTransform(image_size=32)`` and a config of another size given ``image_size=32`` used to give
    different views (the config kept the blur and crops it derived for 224 px): the second is refused now."""
    assert TwoViewTransform(image_size=32).cfg == TwoViewTransform(augment_config(32)).cfg == augment_config(32)
    assert TwoViewTransform(augment_config(32), image_size=32).cfg == augment_config(32)  # the same size: fine
    with pytest.raises(ValueError, match=r"224-px views.*augment_config\(32"):
        TwoViewTransform(augment_config(), image_size=32)
    with pytest.raises(ValueError, match=r"augment_config\(32, 1"):
        TwoViewTransform(augment_config(32), channels=1)
    with pytest.raises(ValueError, match="two view sizes"):
        TwoViewTransform(32, image_size=64)
