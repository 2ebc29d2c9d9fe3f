"""The official Barlow Twins views for comparison (facebookresearch/barlowtwins main.py: Transform): per image
with torchvision v1 and PIL, behind a plain DataLoader, as the official script trains."""

from __future__ import annotations

import random

import torch
import torchvision.transforms as T
from PIL import ImageFilter, ImageOps

from barlowtwins.data.bad_files import (
    ItemsOrUnreadable,
    dropping_unreadable,
    note_unreadable,
)
from barlowtwins.data.images import read_image


class _OfficialBlur:
    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return img.filter(ImageFilter.GaussianBlur(radius=random.random() * 1.9 + 0.1))
        return img


class _OfficialSolarize:
    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


def official_transform(image_size: int = 224):
    """The official two-view ``Transform``: image -> (view1, view2) normalised float tensors."""
    def view(blur_p, solarize_p):
        return T.Compose([
            T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2), _OfficialBlur(blur_p), _OfficialSolarize(solarize_p), T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    v1, v2 = view(1.0, 0.0), view(0.1, 0.2)
    return lambda img: (v1(img), v2(img))


class _OfficialFiles(torch.utils.data.Dataset):
    def __init__(self, files, image_size):
        self.files, self.transform = files, official_transform(image_size)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        # torchvision's default ImageFolder loader (open, convert to RGB), through the package's one image reader
        # and its format allow-list
        img = read_image(self.files[i])
        return self.transform(img), 0


def official_loader(files, image_size: int, batch_size: int, workers: int, persistent: bool = False,
                    skip_unreadable: bool = False):
    """The official script's DataLoader (shuffled, pinned memory when CUDA is there). ``persistent`` keeps its
    workers across epochs (the official script does not; `run_bench` does, so that on a small folder neither
    pipeline is timed re-starting workers at epoch boundaries, which a long ImageNet epoch makes negligible).
    ``skip_unreadable``: its batches are ``(batch | None, [Unreadable, ...])`` (`barlowtwins.data.bad_files`), an
    unreadable file dropped from its batch instead of stopping the loader; `_readable_batches` reads them."""
    data = _OfficialFiles(files, image_size)
    return torch.utils.data.DataLoader(ItemsOrUnreadable(data) if skip_unreadable else data, batch_size=batch_size,
                                       shuffle=True, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       drop_last=True, persistent_workers=persistent and workers > 0,
                                       collate_fn=dropping_unreadable() if skip_unreadable else None)


def _readable_batches(loader):
    """The batches of an `official_loader` built over `ItemsOrUnreadable`: unreadable files dropped and counted."""
    for batch, bad in loader:
        for s in bad:
            note_unreadable(s.file, s.reason)
        if batch is not None:
            yield batch
