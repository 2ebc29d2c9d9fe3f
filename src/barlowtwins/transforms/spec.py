"""The paper's two asymmetric views: their configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the two views. Pairs ``(view1, view2)`` give the asymmetric probabilities."""

    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23  # odd; about a tenth of the image size (BYOL)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def view(self, i: int) -> dict:
        """Probabilities of view ``i`` (0 or 1)."""
        return {"blur_p": self.blur_p[i], "solarize_p": self.solarize_p[i]}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def augment_config(image_size: int = 224, channels: int = 3, **overrides) -> AugmentConfig:
    """The paper's views with defaults adapted to the image size and channel count; ``overrides`` win."""
    cfg = AugmentConfig(image_size=image_size, blur_kernel=max(3, int(0.1 * image_size) // 2 * 2 + 1))
    if image_size <= 32:
        cfg = replace(cfg, blur_p=(0.0, 0.0), crop_scale=(0.2, 1.0))
    if channels == 1:
        cfg = replace(cfg, saturation=0.0, hue=0.0, grayscale_p=0.0)
    valid = {f.name for f in fields(AugmentConfig)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown augmentation field(s) {sorted(unknown)}; valid: {sorted(valid)}")
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(cfg, **overrides)


def channel_values(values: tuple[float, ...]) -> list[float]:
    return list(values) * 3 if len(values) == 1 else list(values)
