"""Data sets: labelled and unlabelled image folders, Fashion-MNIST from IDX files, CIFAR-10/100 and STL-10.

    >>> ds = build_dataset("folder", "/data/imagenet", split="train")   # train/<class>/*.JPEG
    >>> ds = build_dataset("images", "/data/my_scans")                  # any images, any depth, no labels
    >>> ds = build_dataset("fashion-mnist")                             # finds /usr/share/datasets/fashion-mnist
    >>> ds = build_dataset("cifar10", "./data", split="test", download=True)

Every data set is an entry of `DATASETS` (name -> reader, splits, default evaluation split, in memory or
files); `build_dataset` is the one entry point and `register_dataset` adds one. Small data sets
(Fashion-MNIST, CIFAR, STL-10) are held in memory as one uint8 tensor ``images`` of shape (N, C, H, W) and are
augmented a batch at a time; folders are lists of files read by `read_image`, which turns every failure
(corrupt, truncated, unknown format, over PIL's pixel limit) into a one-line `DataError` naming the file.
Unlabelled samples have label -1.

Each split numbers its classes by itself (a folder split: its sorted sub-folder names), so two splits of one data
set can number them differently when one lacks a class; `align_classes` puts an evaluation split on the training
split's numbering (every evaluation uses one class-to-index map) and says what did not match.
"""

from __future__ import annotations

import copy
import gzip
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from barlowtwins.data.hf import table_dataset
from barlowtwins.data.image_files import ImageFiles, split_folders
from barlowtwins.data.images import IMAGE_EXTENSIONS, find_image_files, folder_key
from barlowtwins.data.shards import shard_dataset
from barlowtwins.errors import DataError, field_error
from barlowtwins.runtime.log import NOTE, get_logger
from barlowtwins.runtime.registry import Registry

log = get_logger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


# --------------------------------------------------------------------------------------------------------
# In-memory data sets
# --------------------------------------------------------------------------------------------------------

class InMemoryImages(torch.utils.data.Dataset):
    """uint8 images (N, C, H, W) with int64 labels (N,) (-1 = unlabelled), indexable like any data set."""

    in_memory = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, classes: Sequence[str] = (),
                 name: str = ""):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError(f"data set {name or 'in memory'} is empty")
        self.images = images
        self.labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.int64)
        self.classes = list(classes)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "InMemoryImages":
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return InMemoryImages(self.images[idx], self.labels[idx], self.classes, self.name)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}; re-download or reinstall it") from None
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated; re-download or reinstall it")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    dtypes: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"),
                                        0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
    if zero != 0 or dtype_code not in dtypes:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    shape = struct.unpack(">" + "I" * ndim, data[4: 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"IDX file {path} is truncated ({arr.size} of {int(np.prod(shape))} values)")
    return arr.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """The folder holding Fashion-MNIST's IDX files: ``root`` (or its FashionMNIST/raw), else Debian's."""
    candidates = []
    if root is not None:
        r = Path(root).expanduser()
        candidates += [r, r / "FashionMNIST" / "raw", r / "fashion-mnist"]
    if os.environ.get("FASHION_MNIST_DIR"):
        candidates.append(Path(os.environ["FASHION_MNIST_DIR"]))
    candidates += [Path(d) for d in FASHION_MNIST_DIRS]
    for c in candidates:
        if _find_idx(c, "train-images-idx3-ubyte") is not None:
            return c
    where = ", ".join(str(c) for c in candidates)
    raise field_error(lambda n: f"Fashion-MNIST not found (looked in {where}); on Debian/Ubuntu run 'apt-get install "
                                f"dataset-fashion-mnist', or pass {n('data_dir')} with train-images-idx3-ubyte.gz",
                      DataError)


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train",
                       download: bool = False) -> InMemoryImages:
    """Fashion-MNIST from its IDX files: 60k train / 10k test, (N, 1, 28, 28) uint8."""
    if split not in ("train", "test"):
        raise DataError(f"Fashion-MNIST has splits train and test, not '{split}'")
    try:
        folder = find_fashion_mnist(root)
    except DataError:
        if not download:
            raise
        import torchvision

        torchvision.datasets.FashionMNIST(str(root or "data"), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root or "data"), train=False, download=True)
        folder = find_fashion_mnist(root or "data")
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        raise DataError(f"Fashion-MNIST {split} files missing in {folder}")
    images = torch.from_numpy(read_idx(img_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(lbl_path).astype(np.int64))
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels in {folder}")
    return InMemoryImages(images, labels, FASHION_MNIST_CLASSES, "fashion-mnist")


def _torchvision_dataset(name: str, root: str | os.PathLike | None, split: str, download: bool) -> InMemoryImages:
    import torchvision.datasets as tvd

    root = str(Path(root or "data").expanduser())
    try:
        if name in ("cifar10", "cifar100"):
            if split not in ("train", "test"):
                raise DataError(f"{name} has splits train and test, not '{split}'")
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(root, train=split == "train", download=download)
            images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            return InMemoryImages(images, torch.as_tensor(ds.targets, dtype=torch.int64), ds.classes, name)
        if name == "stl10":
            splits = ("train", "test", "unlabeled", "train+unlabeled")
            if split not in splits:
                raise DataError(f"stl10 has splits {', '.join(splits)}, not '{split}'")
            ds = tvd.STL10(root, split=split, download=download)
            images = torch.from_numpy(np.asarray(ds.data))  # already (N, 3, 96, 96)
            return InMemoryImages(images, torch.as_tensor(ds.labels, dtype=torch.int64), ds.classes, name)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        why = str(e)
        raise field_error(lambda n: f"{name} not found under {root} ({why}); pass {n('download')} on a machine with "
                                    f"internet, or {n('data_dir')} pointing at an existing copy", DataError) from None
    raise DataError(f"unknown data set '{name}'")


# --------------------------------------------------------------------------------------------------------
# Folders of image files
# --------------------------------------------------------------------------------------------------------


def labelled_folder(root: str | os.PathLike, split: str | None = "train",
                    transform: Callable | None = None) -> ImageFiles:
    """``root/<split>/<class>/<image>`` (ImageNet layout); ``split=None`` reads ``root/<class>/<image>``.

    Items are ``(transform(img), class index)`` with ``img`` an RGB PIL image, as torchvision's ``ImageFolder``."""
    base = Path(root).expanduser()
    folder = base / split if split else base
    if base.exists() and not base.is_dir():  # a file given as --data-dir
        raise field_error(lambda n: f"data folder {base} is a file, not a folder; {n('data_dir')} takes a folder of "
                                    f"{split + '/' if split else ''}<class>/<image> (the ImageNet layout)", DataError)
    if not folder.is_dir():
        hint = f" (expected {base}/{split}/<class>/<image>, the ImageNet layout)" if split else ""
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise field_error(lambda n: f"data folder {folder} {what}{hint}; check {n('data_dir')}", DataError)
    classes = sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(folder / n))
    if not classes:
        raise field_error(lambda n: f"data folder {folder} has no class sub-folders; put images in "
                                    f"{folder}/<class>/, or use {n('dataset')} images for unlabelled images", DataError)
    files, labels = [], []
    for label, cls in enumerate(classes):
        # Each class is walked by itself (a folder two classes link to counts in both); a link back to the
        # split folder is not followed (it would list the other classes' images under this one).
        found = find_image_files(folder / cls, seen={folder_key(folder)})
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"data folder {folder} has class folders but no images "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
    return ImageFiles(files, labels, classes, str(folder), transform)


def image_folder(root: str | os.PathLike, transform: Callable | None = None, *, split: str | None = None) -> ImageFiles:
    """Every image under ``root`` at any depth, without labels (label -1).

    Items are ``(transform(img), -1)`` with ``img`` an RGB PIL image (``(img, -1)`` without a transform), as
    torchvision's ``ImageFolder`` returns them; ``TwoViewTransform`` makes each item a pair of views:

        >>> ds = image_folder("my_images", transform=TwoViewTransform(image_size=96))
        >>> (x1, x2), _ = ds[0]

    A folder laid out as splits (``train/`` beside ``val/``, ``validation/`` or ``test/``) is not mixed: only
    ``train/`` is read, with one warning line naming the splits left out. ``split="val"`` reads ``root/val``
    instead; ``split=""`` reads everything under ``root``, the splits together.
    """
    folder = Path(root).expanduser()
    if folder.exists() and not folder.is_dir():  # a file given as --data-dir
        raise field_error(lambda n: f"data folder {folder} is a file, not a folder; {n('data_dir')} takes a folder "
                                    "of images (at any depth)", DataError)
    if not folder.is_dir():
        raise field_error(lambda n: f"data folder {folder} does not exist; check {n('data_dir')}", DataError)
    if split is None:
        splits = split_folders(folder)
        if splits:
            log.warning(f"warning: {folder} holds the split folders {', '.join(s + '/' for s in splits)}: reading "
                        f"{splits[0]}/ only, not mixing in the held-out ones (point at a split's own folder, or "
                        "image_folder(root, split='') for all of them)")
            split = splits[0]
    if split:
        folder = folder / split
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist; check the split '{split}'")
    files = find_image_files(folder)
    if not files:
        raise DataError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} at any depth)")
    return ImageFiles(files, [-1] * len(files), (), str(folder), transform)


# --------------------------------------------------------------------------------------------------------
# One class-to-index map per evaluation
# --------------------------------------------------------------------------------------------------------

def _quoted(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass(frozen=True)
class ClassAlignment:
    """The class-to-index map an evaluation used for every split (``classes[i]`` is class ``i``: the training
    split's numbering) and what the two splits did not share.

    ``only_train``: classes with training images but none in the evaluation split (harmless: they are just never
    the right answer). ``only_eval``: classes with evaluation images but no training images; a classifier can
    never predict them, so their ``unscorable_images`` keep label -1 and count as wrong answers."""

    classes: tuple[str, ...] = ()
    only_train: tuple[str, ...] = ()
    only_eval: tuple[str, ...] = ()
    unscorable_images: int = 0
    train_split: str = "train"
    eval_split: str = "val"

    def warnings(self) -> list[str]:
        """One line per mismatch (without a ``warning:`` prefix); none when the splits share their classes."""
        out = []
        if self.only_train:
            out.append(f"the {self.eval_split} split has no images of {len(self.only_train)} class(es) of the "
                       f"{self.train_split} split ({_quoted(self.only_train)}); every split is numbered by the "
                       f"{self.train_split} split's classes, so the scores are unaffected")
        if self.only_eval:
            out.append(f"{self.unscorable_images} {self.eval_split} image(s) belong to {len(self.only_eval)} "
                       f"class(es) with no {self.train_split} images ({_quoted(self.only_eval)}); they can never be "
                       "predicted and are scored as wrong")
        return out

    def to_record(self) -> dict:
        """``{"classes": [...]}``, plus ``class_mismatch`` when the splits differ: what a result file keeps."""
        rec: dict = {"classes": list(self.classes)}
        if self.only_train or self.only_eval:
            rec["class_mismatch"] = {"train_split": self.train_split, "eval_split": self.eval_split,
                                     "only_train": list(self.only_train), "only_eval": list(self.only_eval),
                                     "unscorable_images": self.unscorable_images}
            if self.only_eval:
                rec["class_mismatch"]["scored_as"] = "wrong"
        return rec


def _present(labels: torch.Tensor, classes: Sequence[str]) -> list[str]:
    """The names of the classes that have at least one sample (labels >= 0)."""
    return [classes[i] for i in torch.unique(labels[labels >= 0]).tolist()]


def align_classes(train, evaluation, train_split: str = "train", eval_split: str = "val"):
    """``(evaluation on the training split's numbering, ClassAlignment)``.

    Classes are matched by name: an evaluation image of class ``c`` gets the training split's index of ``c``; one
    whose class has no training images gets label -1 (never predicted: scored as wrong). Data sets without class
    names or labels (multi-label sets, unlabelled images) are returned as they are. The training split is never
    changed; the evaluation split is a copy when its labels change.
    """
    train_classes = [str(c) for c in getattr(train, "classes", None) or []]
    eval_classes = [str(c) for c in getattr(evaluation, "classes", None) or []]
    tl, el = getattr(train, "labels", None), getattr(evaluation, "labels", None)
    if not train_classes or not eval_classes or not isinstance(tl, torch.Tensor) or not isinstance(el, torch.Tensor):
        return evaluation, ClassAlignment(tuple(train_classes), train_split=train_split, eval_split=eval_split)
    for labels, classes, split in ((tl, train_classes, train_split), (el, eval_classes, eval_split)):
        if len(labels) and int(labels.max()) >= len(classes):
            raise DataError(f"the {split} split has label {int(labels.max())} but only {len(classes)} class names; "
                            "its labels and classes do not match")
    train_named, eval_named = getattr(train, "named_classes", True), getattr(evaluation, "named_classes", True)
    if train_named != eval_named:  # one split's classes are bare label numbers (shards without a manifest ...)
        named, numbered = (train_classes, eval_classes) if train_named else (eval_classes, train_classes)
        if len(numbered) > len(named):
            raise DataError(f"the {train_split if not train_named else eval_split} split has labels up to "
                            f"{len(numbered) - 1} without class names, the other split only {len(named)} named "
                            "classes; their labels cannot be the same classes")
        # the numbers are indices into the named split's classes (WebDataset's .cls convention)
        log.log(NOTE, f"note: the {train_split if not train_named else eval_split} split records no class names; its "
                      f"labels are taken as indices into the {eval_split if not train_named else train_split} split's "
                      f"{len(named)} classes")
        if not train_named:
            train_classes = named  # the training split's numbering, with the names the other split records
        else:
            eval_classes = train_classes[:len(eval_classes)] if eval_classes else []
    in_train = set(_present(tl, train_classes))
    in_eval = _present(el, eval_classes)
    index = {c: i for i, c in enumerate(train_classes) if c in in_train}
    lookup = torch.tensor([index.get(c, -1) for c in eval_classes], dtype=torch.int64)
    new = torch.where(el >= 0, lookup[el.clamp(min=0)], el)
    only_eval = tuple(c for c in in_eval if c not in index)
    alignment = ClassAlignment(tuple(train_classes),
                               only_train=tuple(c for c in train_classes if c in in_train and c not in set(in_eval)),
                               only_eval=only_eval, unscorable_images=int(((el >= 0) & (new < 0)).sum()),
                               train_split=train_split, eval_split=eval_split)
    if torch.equal(new, el) and eval_classes == train_classes:
        return evaluation, alignment
    aligned = copy.copy(evaluation)  # keeps every other attribute (files, images, transform, targets)
    aligned.labels = new
    aligned.classes = list(train_classes)
    return aligned, alignment


# --------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """A data set by name: ``reader(root, split, download)`` returns it; ``splits`` are the valid splits
    (empty: any folder name); ``eval_split`` is the default evaluation split; ``in_memory`` says whether it is
    one uint8 tensor (augmented a batch at a time) or a list of files (decoded per image); ``needs_root``
    whether ``--data-dir`` is required. ``native_size``: the side of its images in pixels when every image has
    it (pretraining without a preset trains at that size, `training.autoconfig`; None: images of any size);
    ``channels``: the channels its images are read with (1: grayscale, whose augmentation drops the colour-only
    steps; files are read as RGB, 3)."""

    name: str
    reader: Callable
    splits: tuple[str, ...]
    eval_split: str
    in_memory: bool
    needs_root: bool = False
    labelled: bool = True
    options: tuple[str, ...] = ()  # keyword options of the reader (``build_dataset(..., **options)``)
    native_size: int | None = None
    channels: int = 3


DATASETS: Registry[DatasetSpec] = Registry("data set", DataError)
register_dataset = DATASETS.register  # a new data set: one DatasetSpec registered here


def _tv(name: str) -> Callable:
    return lambda root, split, download: _torchvision_dataset(name, root, split, download)


for _spec in (
    DatasetSpec("fashion-mnist", load_fashion_mnist, ("train", "test"), "test", in_memory=True, native_size=28,
                channels=1),
    DatasetSpec("cifar10", _tv("cifar10"), ("train", "test"), "test", in_memory=True, native_size=32, channels=3),
    DatasetSpec("cifar100", _tv("cifar100"), ("train", "test"), "test", in_memory=True, native_size=32, channels=3),
    DatasetSpec("stl10", _tv("stl10"), ("train", "test", "unlabeled", "train+unlabeled"), "test", in_memory=True,
                native_size=96, channels=3),
    DatasetSpec("folder", lambda root, split, download: labelled_folder(root, split), (), "val", in_memory=False,
                needs_root=True, native_size=None, channels=3),
    DatasetSpec("images", lambda root, split, download: image_folder(root), (), "val", in_memory=False,
                needs_root=True, labelled=False, native_size=None, channels=3),
    DatasetSpec("webdataset", lambda root, split, download: shard_dataset(root, split), (), "val", in_memory=False,
                needs_root=True, native_size=None, channels=3),
    DatasetSpec("hf", lambda root, split, download, **o: table_dataset(root, split, **o), (), "test",
                in_memory=False, needs_root=True, options=("image_column", "label_column"), native_size=None,
                channels=3),
):
    register_dataset(_spec)


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``, with a one-line error listing the valid names."""
    return DATASETS.lookup(name)


def is_in_memory(dataset) -> bool:
    """True for data sets held as one uint8 tensor (`InMemoryImages`), False for files."""
    return bool(getattr(dataset, "in_memory", False))


def default_val_split(name: str) -> str:
    """The evaluation split of a data set: ``test`` for the built-in ones, ``val`` for folders (ImageNet)."""
    return DATASETS[name].eval_split if name in DATASETS else "val"


def data_options(source, name: str) -> dict:
    """The reader options of data set ``name`` that ``source`` (a config or parsed flags) sets: e.g. ``image_column``
    for ``hf``; {} for a data set without options."""
    spec = DATASETS.get(name)
    return {k: getattr(source, k, None) for k in (spec.options if spec else ())}


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                  download: bool = False, **options):
    """A data set by name (see `DATASETS`): ``fashion-mnist``, ``cifar10``, ``cifar100``, ``stl10``,
    ``folder``, ``images``.

    ``folder`` reads ``root/<split>/<class>/*``; ``images`` reads every image under ``root`` (no labels);
    ``webdataset`` tar shards (`data.shards`); ``hf`` a Hugging Face ``save_to_disk`` folder or Parquet files
    (`data.hf`; ``options``: ``image_column``, ``label_column``). Options left None are not passed.
    """
    spec = dataset_spec(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in options if k not in spec.options]
    if unknown:
        takers = " and ".join(s.name for s in DATASETS.values() if unknown[0] in s.options) or "no data set"
        raise field_error(lambda n: f"{n(unknown[0])} applies to {takers}, not {n('dataset')} {name}", DataError)
    if spec.needs_root and root is None:
        raise field_error(lambda n: f"{n('dataset')} {name} needs {n('data_dir')} pointing at your images", DataError)
    if spec.splits and split not in spec.splits:
        raise DataError(f"{name} has splits {', '.join(spec.splits)}, not '{split}'")
    return spec.reader(root, split, download, **options)
