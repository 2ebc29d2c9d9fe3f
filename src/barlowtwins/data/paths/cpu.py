"""The ``cpu`` data path (the default for folders without a GPU): each loader worker reads a file once and makes
both views whole with PIL (`transforms.pil`), so every core works; the device only normalises."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from barlowtwins.data.images import read_image
from barlowtwins.data.paths.files import _FilePath, _FileSamples
from barlowtwins.transforms.hue_shift import tables
from barlowtwins.transforms.multicrop import MultiCrop
from barlowtwins.transforms.params import sample_uniforms, sample_views_from
from barlowtwins.transforms.pil import draft_size, views_of
from barlowtwins.transforms.progressive import ViewSizes
from barlowtwins.transforms.spec import AugmentConfig


class CpuPath(_FilePath):
    """Files, views made whole per image in the loader workers (PIL); the device only normalises."""

    kind = "cpu"

    def __init__(self, dataset, aug, **kw):
        super().__init__(dataset, aug, **kw)
        if aug.hue and aug.jitter_p:
            tables()  # built here once: loader workers forked from this process share them

    def batch_bytes(self) -> int:
        # two uint8 views (B, S, S, 3) per batch of this rank (``batch_size`` is already per rank), and
        # multi-crop's (B, s, s, 3) small crops
        small = self.multicrop.count * self.multicrop.config(self.aug).image_size ** 2 if self.multicrop else 0
        return self.batch_size * (2 * self.aug.image_size ** 2 + small) * 3

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        samples = lambda: _PilViews(self.files, self.aug, self.seed, self.strict, self.sizes,  # noqa: E731
                                    self.multicrop)
        for views, idx, step, notes in self._batches(samples, epoch, start):
            self._note_skips(notes)
            yield {"views": tuple(views), "step": step}, self.labels[idx], idx

    def _views(self, batch: dict, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        if int(batch["step"][0]) != step:
            raise RuntimeError(f"batch of step {int(batch['step'][0])} used at step {step}")
        views = batch["views"] if crops else batch["views"][:2]
        # the small crops' normaliser: its own BatchViews, whose row constants are cached for their width
        finishers = [self.batch_views] * 2 + ([self._crop_views_at(step)[1]] * (len(views) - 2) if crops else [])
        # (B, S, S, 3) uint8 -> (B, 3, S, S) float, channels-last in memory.
        if self.device.type != "cpu" or self.workers == 0:
            return tuple(f.finish_hwc_uint8(v.to(self.device, non_blocking=True)) for f, v in zip(finishers, views))
        # On a CPU host the loader workers keep every core busy: one thread here, not a pool whose idle threads
        # spin between the two short passes and take CPU from the workers (measured: 12% instead of 18% of a
        # core at 2 workers). The model step after this gets all its threads back.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return tuple(f.finish_hwc_uint8(v) for f, v in zip(finishers, views))
        finally:
            torch.set_num_threads(threads)


class _PilViews(_FileSamples):
    """Worker side of the cpu path: ``(index, step, position)`` -> both views as (S, S, 3) uint8 (then the small
    crops of multi-crop, (s, s, 3) each). A batch's keys come to `__getitems__` together (one step): its random
    numbers are drawn in one numpy pass."""

    def __init__(self, files: list[str], aug: AugmentConfig, seed: int, strict: bool,
                 sizes: ViewSizes | None = None, multicrop: MultiCrop | None = None):
        super().__init__(files, aug, seed, strict, sizes)
        self.multicrop = multicrop

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        step = keys[0][1]
        if any(k[1] != step for k in keys):
            raise ValueError("the keys of one batch belong to one step")
        aug = self.aug if self.sizes is None else self.sizes.at(step)  # progressive resolution: this step's size
        positions = [k[2] for k in keys]
        draws = sample_uniforms(aug, self.seed, step, positions)
        small, sizes = None, [aug.image_size] * 2
        if self.multicrop is not None:
            small = self.multicrop.config(aug)
            small_draws = sample_uniforms(small, self.seed, step, positions, *self.multicrop.streams())
            sizes += [small.image_size] * self.multicrop.count
        out = []
        for j, (i, _, _) in enumerate(keys):
            def params(width, height, j=j):
                p = sample_views_from(aug, draws, j, height, width)
                return p if small is None else p + sample_views_from(small, small_draws, j, height, width)

            (img, full, *p), note = self.read_first_readable(i, lambda path: decode_for_views(path, params, sizes))
            arrays = views_of(img, full, p[:2], aug) + (views_of(img, full, p[2:], small) if small else [])
            out.append((tuple(torch.from_numpy(a) for a in arrays), i, step, note))
        return out


def decode_for_views(path: str, params_for_size, size):
    """Read ``path`` once for its views: ``params_for_size(width, height) -> (p1, p2, ...)`` draws the parameters
    from the header's size; the decode is drafted when every crop allows (``size``: the output side of every
    view, or one per view). Returns (image, full size, p1, p2, ...)."""
    drawn: dict[str, tuple] = {}  # "size": (width, height); "params": (p1, p2, ...)

    def draft(width: int, height: int):
        drawn["size"] = (width, height)
        drawn["params"] = params_for_size(width, height)
        return draft_size(width, height, list(drawn["params"]), size)

    img = read_image(path, draft=draft)  # one open: header, parameters, drafted decode
    return (img, drawn["size"], *drawn["params"])
