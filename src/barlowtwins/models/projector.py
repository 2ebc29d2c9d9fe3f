"""The projector MLP of Barlow Twins."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from barlowtwins.errors import ConfigError

MAX_PROJECTOR_SIZE = 65536  # the largest layer of a projector spec (the paper's is 8192; it tried up to 16384)


def parse_projector_spec(spec: str | Sequence[int]) -> list[int]:
    """``"8192-8192-8192"`` -> ``[8192, 8192, 8192]`` (layer output sizes; the last is the embedding size)."""
    if isinstance(spec, str):
        text = spec.strip()
        parts = text.split("-") if text else []
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"malformed projector spec '{spec}': expected layer sizes joined by '-', "
                              "e.g. 8192-8192-8192") from None
    else:
        sizes = list(spec)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise ConfigError(f"malformed projector spec {sizes!r:.80}: layer sizes must be integers, "
                              "e.g. [8192, 8192, 8192]")
    if not sizes:
        raise ConfigError(f"malformed projector spec '{spec}': give at least one layer size, e.g. 8192-8192-8192")
    if any(s <= 0 for s in sizes):
        raise ConfigError(f"malformed projector spec '{spec}': layer sizes must be positive integers")
    if max(sizes) > MAX_PROJECTOR_SIZE:
        raise ConfigError(f"projector spec '{spec}': layer sizes must be at most {MAX_PROJECTOR_SIZE}, "
                          f"got {max(sizes)}")
    return sizes


class Projector(nn.Sequential):
    """The paper's projector: (Linear no-bias -> BN -> ReLU) for every layer but the last, then Linear.

    Args:
        in_features: backbone output width.
        spec: layer sizes, ``"8192-8192-8192"`` (paper) or a list of ints.
        batch_norm: ``False`` drops the BN layers (an ablation of the paper's Table 5).
    """

    def __init__(self, in_features: int, spec: str | Sequence[int] = "8192-8192-8192", batch_norm: bool = True):
        sizes = [in_features, *parse_projector_spec(spec)]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 2):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        super().__init__(*layers)
        self.out_features = sizes[-1]
