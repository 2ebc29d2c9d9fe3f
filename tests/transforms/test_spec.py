"""The spec of the views: every executor against torchvision's functional ops, op by op, for the same parameters;
the layout, config and parameters derived from the spec; and an extra op added in one place flowing through."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F1
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from barlowtwins.transforms import device, pil, tensor, two_view
from barlowtwins.transforms.params import DRAWS, sample_uniforms, sample_views_from, view_params
from barlowtwins.transforms.spec import (
    IMAGENET_STD,
    NORMALISATION,
    NUM_UNIFORMS,
    OPS,
    SPEC,
    VIEW_SIZE,
    AugmentConfig,
    Op,
    Setting,
    Spec,
    _ConfigMethods,
    augment_config,
    run_ops,
)

SIZE = 16  # view size: every crop of a 60 x 70 image at scale >= 0.08 is larger, so every crop shrinks
H, W = 60, 70
N = 12


@pytest.fixture(scope="module")
def photo():
    """A 60 x 70 RGB image with smooth colour regions and pixel noise (so every op changes something)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((W, H), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-10, 11, (H, W, 3)), 0, 255).astype(np.uint8))


def params_with_both_branches(cfg, view=1):
    """The drawn parameters of ``N`` samples, with every op's on/off flag set on even samples and off on odd
    ones (view 2's blur, p 0.1, would otherwise rarely be on in 12 samples)."""
    p = view_params(cfg, view, seed=0, step=3, positions=range(N), heights=H, widths=W)
    for op in cfg.spec.ops:
        if op.prob is not None:
            p.values[op.outputs[0]] = torch.arange(N) % 2 == 0
    return p


# torchvision's functional ops, one reference per op of the spec: (image, one sample's parameters, cfg) -> image.
# ``img`` is a PIL image or a float (3, H, W) tensor in [0, 1]; F1 dispatches on the type.
def _ref_crop(img, s, cfg):
    t, l, h, w = (int(v) for v in s.box)
    out = F1.resized_crop(img, t, l, h, w, [cfg.image_size] * 2, InterpolationMode.BICUBIC, antialias=True)
    # Bicubic overshoots [0, 1] on float tensors; the views are clamped (as a round trip through uint8 would).
    return out.clamp(0, 1) if isinstance(out, torch.Tensor) else out


def _ref_jitter(img, s, cfg):
    if not s.jitter:
        return img
    ops = (F1.adjust_brightness, F1.adjust_contrast, F1.adjust_saturation, F1.adjust_hue)
    for op in s.order:
        img = ops[op](img, s.factors[op])
    return img


def _ref_blur(img, s, cfg):
    return F1.gaussian_blur(img, [cfg.blur_kernel] * 2, [s.sigma] * 2) if s.blur else img


def _ref_solarize(img, s, cfg):
    if not s.solarize:
        return img
    return F1.solarize(img, 128 if isinstance(img, Image.Image) else 128 / 255)


REFERENCE = {
    "crop": _ref_crop,
    "flip": lambda img, s, cfg: F1.hflip(img) if s.flip else img,
    "jitter": _ref_jitter,
    "gray": lambda img, s, cfg: F1.rgb_to_grayscale(img, num_output_channels=3) if s.gray else img,
    "blur": _ref_blur,
    "solarize": _ref_solarize,
}

# Largest difference allowed per executor and op, in levels of 255 (PIL) or in [0, 1] (tensors).
PIL_TOLERANCE = {
    # Image.resize(box=) is crop-then-resize with the same filter, except that at the crop's edges its support
    # reaches the real pixels outside the box where the cropped image repeats its border: equal inside
    # (within rounding), different only in a 3-pixel frame (checked separately below).
    "crop": 1,
    # The blur leaves out the kernel's taps beyond 4 sigma (weights < 1e-4 of the centre's): one level at most.
    "blur": 1,
    # flip, jitter (lookup tables with ImageEnhance's arithmetic, PIL's HSV hue to the bit), grayscale and
    # solarisation are the same integer arithmetic as torchvision's PIL ops: equal.
}
TENSOR_TOLERANCE = {
    # float32 arithmetic in another order (blends as one expression, hue through a closed-form HSV -> RGB, the
    # blur's separable convolution over the batch): a few units of float32 rounding on values in [0, 1].
    "jitter": 2e-5,
    "blur": 1e-5,
    # The crop shrinks with F.interpolate(antialias=True), torchvision's own resize: rounding only.
    "crop": 1e-5,
}


def test_every_executor_has_one_function_per_op_of_the_spec():
    names = {op.name for op in SPEC.ops}
    for executor in (pil.OPS, tensor.OPS, device.OPS, two_view.OPS, REFERENCE):
        assert set(executor) == names
    for op in SPEC.ops:  # an op without its own draw is a plain coin flip on its one 'apply' column
        assert op.name in DRAWS or (op.prob is not None and op.columns == (("apply", 1),))


@pytest.mark.parametrize("op", [op.name for op in OPS])
def test_pil_executor_equals_torchvision_on_pil_images(photo, op):
    cfg = augment_config(SIZE)
    p = params_with_both_branches(cfg)
    # Geometry ops take the source image, colour ops a view of the view size.
    src = photo if SPEC.op(op).kind == "geometry" else photo.resize((SIZE, SIZE), Image.BICUBIC)
    for i in range(N):
        s = p.sample(i)
        ours = np.asarray(pil.OPS[op](src, s, cfg), dtype=np.int16)
        ref = np.asarray(REFERENCE[op](src, s, cfg), dtype=np.int16)
        assert ours.shape == ref.shape
        diff = np.abs(ours - ref)
        if op == "crop":
            diff = diff[3:-3, 3:-3]
            assert np.abs(ours - ref).mean() < 0.5
        assert diff.max() <= PIL_TOLERANCE.get(op, 0), (op, i, diff.max())


@pytest.mark.parametrize("op", [op.name for op in OPS])
def test_tensor_and_device_executors_equal_torchvision_on_tensors(photo, op):
    cfg = augment_config(SIZE)
    p = params_with_both_branches(cfg)
    uint8 = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)  # (3, H, W)
    full = uint8.float() / 255
    x = full if op == "crop" else torch.nn.functional.interpolate(full[None], size=(SIZE, SIZE), mode="bilinear")[0]
    batch = x.expand(N, -1, -1, -1).contiguous()  # the same image N times, each with its own parameters
    outs = {"tensor": tensor.OPS[op](batch, p, cfg),
            # the device executor's crop takes the decoded uint8 images of their own sizes
            "device": device.OPS[op]([uint8] * N if op == "crop" else batch, p, cfg)}
    for i in range(N):
        ref = REFERENCE[op](x, p.sample(i), cfg)
        for name, out in outs.items():
            torch.testing.assert_close(out[i], ref, atol=TENSOR_TOLERANCE.get(op, 1e-6), rtol=0,
                                       msg=lambda m: f"{name} executor, op {op}, sample {i}: {m}")


def test_whole_views_chain_the_ops_in_spec_order(photo):
    """The executors' loop (`run_ops`) = the references applied in the spec's order (PIL, per sample)."""
    cfg = augment_config(SIZE)
    p = params_with_both_branches(cfg)
    for i in range(N):
        s = p.sample(i)
        ref = photo
        for op in SPEC.ops:
            ref = REFERENCE[op.name](ref, s, cfg)
        diff = np.abs(np.asarray(pil.view(photo, s, cfg), dtype=np.int16) - np.asarray(ref, dtype=np.int16))
        assert diff[3:-3, 3:-3].max() <= 2 and diff.mean() < 0.5, i  # crop and blur, one level each


def test_uniform_columns_follow_the_ops_in_order():
    """The layout is the ops' columns back to back: no gap, no overlap, and the paper's ops keep the layout runs
    have always drawn (the crop's 22 first, then flip, jitter, gray, blur, solarise)."""
    cols = [(s.start, s.stop) for op in SPEC.ops for s in SPEC.columns[op.name].values()]
    assert cols[0][0] == 0 and cols[-1][1] == NUM_UNIFORMS
    assert all(a[1] == b[0] for a, b in zip(cols, cols[1:]))
    assert NUM_UNIFORMS == sum(c for op in OPS for _, c in op.columns)
    assert SPEC.columns["crop"]["area"] == slice(0, 10) and SPEC.columns["solarize"]["apply"] == slice(35, 36)


def test_the_config_has_exactly_the_settings_of_the_ops_with_the_papers_defaults():
    names = [f for f in AugmentConfig.__dataclass_fields__]
    assert names == ["image_size", *(s.name for op in OPS for s in op.settings), "mean", "std"]
    cfg = augment_config(224)
    assert (cfg.crop_scale, cfg.crop_ratio, cfg.interpolation) == ((0.08, 1.0), (3 / 4, 4 / 3), "bicubic")
    assert cfg.hflip_p == 0.5 and cfg.jitter_p == 0.8 and cfg.grayscale_p == 0.2
    assert (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) == (0.4, 0.4, 0.2, 0.1)
    assert cfg.blur_sigma == (0.1, 2.0) and cfg.blur_kernel == 23
    assert [cfg.prob("blur", v) for v in (0, 1)] == [1.0, 0.1]  # the asymmetric views
    assert [cfg.prob("solarize", v) for v in (0, 1)] == [0.0, 0.2]
    assert cfg.prob("crop", 0) == 1.0  # no probability: always applied
    assert isinstance(cfg, AugmentConfig) and AugmentConfig(image_size=224) == cfg


def test_the_written_out_config_class_equals_what_the_op_spec_declares():
    """`AugmentConfig` is written out field by field (for IDEs and type checkers): its fields are the spec's
    settings (the view size, the ops' settings in op order, the normalisation), with the same defaults, so that
    the class and the ops cannot drift apart; and `SPEC` owns it."""
    declared = [(f.name, f.default) for f in dataclasses.fields(AugmentConfig)]
    expected = [(s.name, s.default) for s in (VIEW_SIZE, *(s for op in OPS for s in op.settings), *NORMALISATION)]
    assert declared == expected
    assert declared == [(s.name, s.default) for s in SPEC.settings]
    assert all(f.default is not dataclasses.MISSING and f.init and f.compare for f in dataclasses.fields(AugmentConfig))
    assert SPEC.config_class is AugmentConfig and AugmentConfig.spec is SPEC
    assert AugmentConfig.__dataclass_params__.frozen and AugmentConfig.__dataclass_params__.eq
    assert AugmentConfig.__module__ == "barlowtwins.transforms.spec" and AugmentConfig.__qualname__ == "AugmentConfig"


def test_a_config_class_that_drifted_from_the_spec_is_refused():
    """A field missing, renamed, with another default or out of order: refused when the spec is made (at import
    for `SPEC`), not found later as a view that silently ignores a setting."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(AugmentConfig)]
    for changed in (fields[:-1], fields[:-1] + [("stdev", float, dataclasses.field(default=IMAGENET_STD))],
                    fields[:-1] + [("std", float, dataclasses.field(default=(0.5, 0.5, 0.5)))],
                    [fields[1], fields[0], *fields[2:]]):
        cls = dataclasses.make_dataclass("Drifted", changed, bases=(_ConfigMethods,), frozen=True)
        with pytest.raises(ValueError, match="not the spec's settings"):
            Spec(OPS, written_config=cls)
    with pytest.raises(ValueError, match="config class of another spec"):
        Spec(OPS, written_config=AugmentConfig)
    assert AugmentConfig.spec is SPEC


def test_the_config_compares_hashes_replaces_and_pickles_by_value():
    """What the runs rely on (settings compared and hashed, replaced for progressive resolution and multi-crop,
    dict'ed for config.yaml, pickled for spawned loader workers): as the generated class did."""
    cfg = augment_config(32, channels=1)
    same = augment_config(32, channels=1)
    assert cfg == same and hash(cfg) == hash(same) and cfg != augment_config(33)
    assert cfg != TOY.config(32, channels=1)  # another spec's class: never equal
    smaller = dataclasses.replace(cfg, image_size=16)
    assert isinstance(smaller, AugmentConfig) and smaller.image_size == 16 and smaller.blur_p == cfg.blur_p
    assert dataclasses.asdict(cfg) == {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    assert cfg.to_dict()["crop_scale"] == [0.2, 1.0] and cfg.to_dict()["image_size"] == 32
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(cfg, protocol=protocol))
        assert back == cfg and type(back) is AugmentConfig and back.spec is SPEC
    assert copy.deepcopy(cfg) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 8
    # augment_config(32, channels=1) pickled (protocol 4) when AugmentConfig was made by make_dataclass
    old = bytes.fromhex(
        "800495e7010000000000008c1b6261726c6f777477696e732e7472616e73666f726d732e73706563948c0d4175676d656e74436f"
        "6e6669679493942981947d94288c0a696d6167655f73697a65944b208c0a63726f705f7363616c6594473fc999999999999a473f"
        "f000000000000086948c0a63726f705f726174696f94473fe8000000000000473ff555555555555586948c0d696e746572706f6c"
        "6174696f6e948c0762696375626963948c0768666c69705f7094473fe00000000000008c086a69747465725f7094473fe9999999"
        "99999a8c0a6272696768746e65737394473fd999999999999a8c08636f6e747261737494473fd999999999999a8c0a7361747572"
        "6174696f6e944700000000000000008c03687565944700000000000000008c0b677261797363616c655f70944700000000000000"
        "008c06626c75725f709447000000000000000047000000000000000086948c0a626c75725f7369676d6194473fb999999999999a"
        "47400000000000000086948c0b626c75725f6b65726e656c944b038c0a736f6c6172697a655f7094470000000000000000473fc9"
        "99999999999a86948c046d65616e94473fdf0a3d70a3d70a473fdd2f1a9fbe76c9473fd9fbe76c8b439687948c0373746494473f"
        "cd4fdf3b645a1d473fccac083126e979473fcccccccccccccd879475622e")
    assert pickle.loads(old) == cfg


def test_factory_adapts_to_small_and_gray_images():
    small = augment_config(32)
    assert small.blur_p == (0.0, 0.0) and small.crop_scale == (0.2, 1.0) and small.blur_kernel == 3
    assert augment_config(96).blur_kernel == 9 and augment_config(96).blur_p == (1.0, 0.1)
    gray = augment_config(28, channels=1)
    assert gray.saturation == gray.hue == gray.grayscale_p == 0.0 and gray.brightness == 0.4
    assert augment_config(28, channels=1, crop_scale=[0.3, 1.0]).crop_scale == (0.3, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation field"):
        augment_config(32, blurr=1)


# --------------------------------------------------------------------------------------------------------
# A toy extra op: colour inversion declared once in a copy of the spec, plus one function per executor.
# --------------------------------------------------------------------------------------------------------

INVERT = Op("invert", "colour", (Setting("invert_p", 0.3),), columns=(("apply", 1),), outputs=("invert",),
            prob="invert_p")
TOY = Spec(OPS + (INVERT,), config_name="ToyConfig")
TOY_TENSOR = {**tensor.OPS, "invert": lambda x, p, cfg: torch.where(p.invert.view(-1, 1, 1, 1), 1 - x, x)}
TOY_PIL = {**pil.OPS, "invert": lambda img, p, cfg: ImageOps.invert(img) if p.invert else img}
TOY_TORCHVISION = {**two_view.OPS, "invert": lambda cfg, view: [T.RandomInvert(cfg.invert_p)]}


def test_an_extra_op_lands_in_the_layout_the_config_and_the_parameters():
    cfg = TOY.config(24)
    assert cfg.invert_p == 0.3 and cfg.prob("invert", 1) == 0.3
    assert TOY.num_uniforms == NUM_UNIFORMS + 1 and TOY.columns["invert"]["apply"] == slice(36, 37)
    n = 4000
    p = view_params(cfg, 0, seed=2, step=1, positions=range(n), heights=H, widths=W)
    assert p.invert.dtype == torch.bool and abs(p.invert.double().mean() - 0.3) < 0.03
    # Added at the end, it leaves the other ops' columns alone: the same parameters as without it.
    base = view_params(augment_config(24), 0, seed=2, step=1, positions=range(n), heights=H, widths=W)
    for name, value in base.values.items():
        assert torch.equal(p.values[name], value), name
    # The per-sample path of the loader workers draws it too, equal to the batched one.
    draws = sample_uniforms(cfg, 2, 1, range(8))
    for j in range(8):
        for view, s in enumerate(sample_views_from(cfg, draws, j, H, W)):
            assert s == view_params(cfg, view, 2, 1, range(8), H, W).sample(j)


def test_an_extra_op_runs_in_every_executor_in_spec_order(photo):
    settings = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0))
    cfg, base = TOY.config(SIZE, **settings), augment_config(SIZE, **settings)
    p = params_with_both_branches(cfg)  # inverted (and solarised) on even samples
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float().div(255).expand(N, -1, -1, -1)
    plain, toy = run_ops(tensor.OPS, x, p, base), run_ops(TOY_TENSOR, x, p, cfg)
    for i in range(N):  # the new op last, after solarisation, as torchvision's invert
        torch.testing.assert_close(toy[i], F1.invert(plain[i]) if i % 2 == 0 else plain[i], rtol=0, atol=0)
    s = p.sample(0)
    assert np.array_equal(np.asarray(pil.view(photo, s, cfg, ops=TOY_PIL)),
                          np.asarray(F1.invert(pil.view(photo, s, base))))
    steps = two_view.view_transform(cfg, 0, ops=TOY_TORCHVISION).transforms
    assert isinstance(steps[-3], T.RandomInvert) and steps[-3].p == 0.3  # then ToDtype, Normalize
    with pytest.raises(KeyError, match="no function for op 'invert'"):
        run_ops(tensor.OPS, x, p, cfg)  # an executor without the new op fails loudly, not silently


def test_geometry_ops_come_first():
    with pytest.raises(ValueError, match="geometry ops must come before"):
        Spec(OPS + (Op("vflip", "geometry", (Setting("vflip_p", 0.5),), (("apply", 1),), ("vflip",), "vflip_p"),))
