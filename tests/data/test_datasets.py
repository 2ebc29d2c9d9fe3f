"""Data sets: IDX files, Fashion-MNIST discovery, folders and their errors, and resumable sharded batches."""

import numpy as np
import pytest
import torch
from conftest import make_fashion_mnist, says_both, write_idx

from barlowtwins.cli.pretrain import printed_config
from barlowtwins.data.datasets import (
    DATASETS,
    DatasetSpec,
    InMemoryImages,
    build_dataset,
    default_val_split,
    image_folder,
    is_in_memory,
    labelled_folder,
    load_fashion_mnist,
    read_idx,
)
from barlowtwins.data.images import read_image
from barlowtwins.errors import DataError
from barlowtwins.training.autoconfig import fit_to_data
from barlowtwins.training.config import config_from_dict, resolve_values


def test_idx_round_trip_gz_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "b.idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04\x05")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((10, 5), dtype=np.uint8)
    write_idx(tmp_path / "t", arr)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t")


def test_fashion_mnist_from_a_folder(tmp_path):
    folder = make_fashion_mnist(tmp_path / "fm", n_train=30, n_test=20)
    train = load_fashion_mnist(folder, "train")
    test = build_dataset("fashion-mnist", folder, "test")
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 20 and test.labels.tolist() == [i % 10 for i in range(20)]
    assert train.num_classes == 10 and train.classes[0] == "T-shirt/top"
    # The torchvision download layout is found too.
    tv = make_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert len(load_fashion_mnist(tmp_path / "tv")) == 64 and tv.exists()


def test_fashion_mnist_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr("barlowtwins.data.datasets.FASHION_MNIST_DIRS", ())
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nothing")


def test_labelled_and_unlabelled_folders(image_tree):
    train = labelled_folder(image_tree, "train")
    assert train.classes == ["cat", "dog"] and len(train) == 12
    img, label = train[0]
    assert img.mode == "RGB" and label == 0
    assert {f.rsplit(".", 1)[1] for f in train.files} == {"jpg", "png"}
    flat = image_folder(image_tree, split="")  # recursive, no labels: every split, when asked
    assert len(flat) == 24 and (flat.labels == -1).all()
    assert len(image_folder(image_tree / "train")) == 12


def test_folders_apply_a_transform_to_each_pil_image(image_tree):
    seen = []

    def transform(img):
        seen.append((img.mode, img.size))
        return torch.tensor(img.size)

    flat = image_folder(image_tree, transform=transform)
    x, label = flat[1]
    assert label == -1 and seen == [("RGB", read_image(flat.files[1]).size)] and x.tolist() == list(seen[0][1])
    assert flat.subset([0, 1]).transform is transform  # subsets keep it
    train = labelled_folder(image_tree, "train", transform=transform)
    x, label = train[len(train) - 1]
    assert label == 1 and x.tolist() == list(read_image(train.files[-1]).size)
    assert image_folder(image_tree)[0][0].mode == "RGB"  # no transform: the PIL image itself


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        labelled_folder(tmp_path / "missing", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class sub-folders"):
        labelled_folder(tmp_path / "empty", "train")
    (tmp_path / "empty" / "train" / "cls").mkdir()
    (tmp_path / "empty" / "train" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        labelled_folder(tmp_path / "empty", "train")
    with pytest.raises(DataError, match="no images found"):
        image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="needs data_dir"):
        build_dataset("images", None)
    with pytest.raises(DataError, match="unknown data set"):
        build_dataset("mnist2")


def test_a_file_given_as_the_data_folder_says_it_is_a_file(tmp_path, image_tree):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((image_tree / "train" / "cat" / "cat_0.jpg").read_bytes())
    for make, needed in ((lambda: labelled_folder(photo, "train"), "a folder of train/<class>/<image>"),
                         (lambda: build_dataset("folder", photo), "a folder of train/<class>/<image>"),
                         (lambda: labelled_folder(photo, None), "a folder of <class>/<image>"),
                         (lambda: image_folder(photo), "a folder of images"),
                         (lambda: build_dataset("images", photo), "a folder of images")):
        with pytest.raises(DataError) as e:
            make()
        says_both(e.value, f"data folder {photo} is a file, not a folder; --data-dir takes {needed}")
        assert "does not exist" not in str(e.value)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "train").write_text("x")  # the split a file
    with pytest.raises(DataError, match="flat/train is a file, not a folder"):
        labelled_folder(tmp_path / "flat", "train")


def test_registry_names_splits_and_storage(fmnist_dir, image_tree):
    assert set(DATASETS) == {"fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "images", "webdataset", "hf"}
    assert default_val_split("cifar10") == "test" and default_val_split("folder") == "val"
    assert is_in_memory(build_dataset("fashion-mnist", fmnist_dir)) and DATASETS["fashion-mnist"].in_memory
    assert not is_in_memory(build_dataset("folder", image_tree)) and not DATASETS["folder"].in_memory
    with pytest.raises(DataError, match="has splits train, test, not 'val'"):
        build_dataset("fashion-mnist", fmnist_dir, "val")


def test_every_data_set_states_its_native_size_and_channels(fmnist_dir):
    """The size and channels a data set's entry states are what its reader gives (files: any size, read as RGB)."""
    sizes = {name: (spec.native_size, spec.channels) for name, spec in DATASETS.items()}
    assert sizes == {"fashion-mnist": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3), "stl10": (96, 3),
                     "folder": (None, 3), "images": (None, 3), "webdataset": (None, 3), "hf": (None, 3)}
    fm = build_dataset("fashion-mnist", fmnist_dir)
    assert (fm.image_size, fm.channels) == sizes["fashion-mnist"]


def test_a_registered_data_set_brings_its_size_and_channels_to_the_planner(monkeypatch):
    """One `register_dataset` call is enough: the no-preset planner trains at the entry's native size, and the
    printed config adapts the augmentation to its channel count."""
    images = torch.zeros(4, 1, 40, 40, dtype=torch.uint8)
    spec = DatasetSpec("tiny-gray", lambda root, split, download: InMemoryImages(images, None, name="tiny-gray"),
                       ("train",), "train", in_memory=True, native_size=40, channels=1)
    monkeypatch.setitem(DATASETS, spec.name, spec)  # registered for this test only
    values = resolve_values(None, None, {"dataset": "tiny-gray", "backbone": "resnet18"})
    cfg, note = fit_to_data(config_from_dict(values), set(values))
    assert (cfg.image_size, cfg.stem, cfg.batch_size) == (40, "small-pool", 256) and "40 px" in note
    text = printed_config(cfg)
    assert "1 channel(s)" in text and "grayscale_p: 0.0  # derived" in text and "hue: 0.0  # derived" in text
    three = DatasetSpec("tiny-rgb", spec.reader, ("train",), "train", in_memory=True, native_size=24, channels=3)
    monkeypatch.setitem(DATASETS, three.name, three)
    values = resolve_values(None, None, {"dataset": "tiny-rgb", "backbone": "resnet18"})
    cfg, _ = fit_to_data(config_from_dict(values), set(values))
    assert (cfg.image_size, cfg.stem) == (24, "small")
    assert "3 channel(s)" in printed_config(cfg) and "grayscale_p: 0.2  # derived" in printed_config(cfg)






def test_align_classes_numbers_the_evaluation_split_by_the_training_split(tmp_path):
    """Folder splits number their classes by their own sub-folders; `align_classes` maps the evaluation split
    onto the training split's numbering by name, and a class training lacks gets -1 (scored as wrong)."""
    from conftest import make_image_folder

    from barlowtwins.data.datasets import InMemoryImages, align_classes

    make_image_folder(tmp_path / "f", classes=("a", "b", "c"), per_class=2, size=8, splits=("train",))
    make_image_folder(tmp_path / "f", classes=("b", "c", "d"), per_class=2, size=8, splits=("val",))
    train, val = labelled_folder(tmp_path / "f", "train"), labelled_folder(tmp_path / "f", "val")
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]  # b, c, d: numbered by the split itself
    aligned, al = align_classes(train, val)
    assert aligned.labels.tolist() == [1, 1, 2, 2, -1, -1] and aligned.classes == ["a", "b", "c"]
    assert aligned.files == val.files and val.labels.tolist() == [0, 0, 1, 1, 2, 2]  # a copy; val unchanged
    assert al.only_train == ("a",) and al.only_eval == ("d",) and al.unscorable_images == 2
    lines = al.warnings()
    assert len(lines) == 2 and "'a'" in lines[0] and "'d'" in lines[1] and "scored as wrong" in lines[1]
    assert al.to_record()["class_mismatch"]["scored_as"] == "wrong"

    # The same classes: nothing changes, nothing to say; data without class names is left as it is.
    same, al = align_classes(train, labelled_folder(tmp_path / "f", "train"))
    assert same.labels.tolist() == train.labels.tolist() and al.warnings() == []
    assert al.to_record() == {"classes": ["a", "b", "c"]}
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    bare = InMemoryImages(images, torch.tensor([0, 1, 0, 1]))
    assert align_classes(bare, bare)[0] is bare
    multi = labelled_folder(tmp_path / "f", "val")
    multi.targets = torch.ones(len(multi), 3)
    assert align_classes(train, multi)[0].targets is multi.targets  # other attributes travel with the copy


def _nested_classes(root):
    """root/train/<class>/<sub>/<image>: class folders with sub-folders of their own, names in no sorted order."""
    from PIL import Image

    for cls in ("b_cls", "a_cls"):
        for sub in ("zeta", "alpha", "mid", ""):
            d = root / "train" / cls / sub
            d.mkdir(parents=True, exist_ok=True)
            for name in ("2.png", "10.png", "1.png"):
                Image.new("RGB", (4, 4)).save(d / name)
    return root


def _reversed_scandir(monkeypatch):
    """os.scandir (which os.walk uses too) and os.listdir return their entries in reverse order, as another
    file system may."""
    import os

    real_scandir, real_listdir = os.scandir, os.listdir

    class Reversed:
        def __init__(self, path):
            with real_scandir(path) as it:
                self.entries = iter(sorted(it, key=lambda e: e.name, reverse=True))

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

    monkeypatch.setattr(os, "scandir", Reversed)
    monkeypatch.setattr(os, "listdir", lambda path=".": sorted(real_listdir(path), reverse=True))


def test_listings_are_sorted_at_every_depth_whatever_order_the_file_system_gives(tmp_path, monkeypatch):
    """Ranks on different nodes must index the same list: the listing of class folders with sub-folders (and of
    a whole tree) does not depend on the order the file system lists entries in."""
    root = _nested_classes(tmp_path / "d")
    labelled, flat = labelled_folder(root, "train").files, image_folder(root).files
    _reversed_scandir(monkeypatch)
    assert labelled_folder(root, "train").files == labelled
    assert image_folder(root).files == flat
    rel = [f[len(str(root / "train")) + 1:] for f in labelled]
    assert rel[:6] == ["a_cls/1.png", "a_cls/10.png", "a_cls/2.png", "a_cls/alpha/1.png", "a_cls/alpha/10.png",
                       "a_cls/alpha/2.png"] and len(rel) == 24 and rel[-1] == "b_cls/zeta/2.png"


@pytest.mark.timeout(30)  # the walk before the fix went on for ever
def test_a_symlink_loop_lists_each_file_once(tmp_path):
    """A folder holding a link to its parent (or to the split folder) is walked once: no file is listed twice,
    and the walk ends."""
    import os

    from PIL import Image

    cat = tmp_path / "d" / "train" / "cat"
    (cat / "sub").mkdir(parents=True)
    (tmp_path / "d" / "train" / "dog").mkdir()
    for d in (cat, cat / "sub", tmp_path / "d" / "train" / "dog"):
        Image.new("RGB", (4, 4)).save(d / "x.png")
    try:
        os.symlink(cat, cat / "sub" / "up")  # a loop: cat/sub/up/sub/up/...
        os.symlink(tmp_path / "d" / "train", cat / "split")  # would list dog's image as a cat
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    ds = labelled_folder(tmp_path / "d", "train")
    assert [os.path.relpath(f, tmp_path / "d" / "train") for f in ds.files] == [
        "cat/x.png", "cat/sub/x.png", "dog/x.png"] and ds.labels.tolist() == [0, 0, 1]
    flat = image_folder(tmp_path / "d")
    assert len(flat.files) == 3 and len({os.path.realpath(f) for f in flat.files}) == 3


def test_listing_thousands_of_files_reads_names_only(tmp_path, monkeypatch):
    """Building a folder data set lists names: no image is opened or decoded, however many there are."""
    import builtins

    import PIL.Image

    for cls in ("a", "b"):
        d = tmp_path / "train" / cls
        d.mkdir(parents=True)
        for i in range(1500):
            (d / f"{i}.jpg").touch()  # empty: any decode would fail

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a file was opened while listing: {args[:1]}")

    monkeypatch.setattr(PIL.Image, "open", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    assert len(labelled_folder(tmp_path, "train")) == 3000 and len(image_folder(tmp_path)) == 3000


def test_image_folder_does_not_mix_the_splits_of_a_split_folder(image_tree, capsys):
    """``image_folder(root)`` on ``root/train`` + ``root/val`` used to read both: the held-out images went into
    pretraining. It reads ``train/`` with one warning line; ``split=`` picks another, ``split=""`` all; the CPU
    plan counts what is read."""
    ds = image_folder(image_tree)
    err = capsys.readouterr().err
    assert len(ds) == 12 and all("/train/" in f for f in ds.files)
    assert len(err.strip().splitlines()) == 1 and "train/, val/" in err and "reading train/ only" in err, err
    val = image_folder(image_tree, split="val")
    assert len(val) == 12 and all("/val/" in f for f in val.files) and capsys.readouterr().err == ""
    assert len(image_folder(image_tree, split="")) == 24
    assert len(image_folder(image_tree / "train")) == 12 and capsys.readouterr().err == ""  # no splits: no line
    with pytest.raises(DataError, match="does not exist"):
        image_folder(image_tree, split="test")
    _, note = fit_to_data(config_from_dict({"dataset": "images", "data_dir": str(image_tree), "device": "cpu"}))
    assert "for 12 images" in note, note
