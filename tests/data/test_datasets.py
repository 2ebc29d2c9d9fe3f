"""Data sets: IDX files, Fashion-MNIST discovery, folders and their errors, and resumable sharded batches."""

import numpy as np
import pytest
import torch
from conftest import make_fashion_mnist, write_idx
from PIL import Image

from barlowtwins.data.datasets import (
    DATASETS,
    build_dataset,
    default_val_split,
    image_folder,
    is_in_memory,
    labelled_folder,
    load_fashion_mnist,
    read_idx,
)
from barlowtwins.data.images import first_decodable, read_image, scan_images
from barlowtwins.data.sampling import BatchStream
from barlowtwins.errors import DataError


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
    flat = image_folder(image_tree)  # recursive, no labels
    assert len(flat) == 24 and (flat.labels == -1).all()


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
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset("images", None)
    with pytest.raises(DataError, match="unknown data set"):
        build_dataset("mnist2")


def test_corrupt_image_names_the_file(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg.*remove or replace"):
        read_image(d / "broken.jpg")
    ds = image_folder(d)  # listing does not decode
    with pytest.raises(DataError, match="broken.jpg.*remove or replace"):
        ds[0]
    with pytest.raises(DataError, match="none of the 1 image files in here can be decoded"):
        first_decodable(ds.files, "here")
    Image.new("RGB", (8, 8)).save(d / "ok.png")
    assert first_decodable(image_folder(d).files, "here") == 1  # stops at the first readable file


def test_batch_stream_shards_cover_the_data_once(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)  # 64 images
    seen = []
    for rank in range(2):
        stream = BatchStream(ds, 8, shuffle=True, drop_last=True, seed=3, rank=rank, world_size=2)
        assert len(stream) == 4
        for _, _, idx in stream.epoch(1):
            seen += idx.tolist()
    assert sorted(seen) == list(range(64))


def test_batch_stream_resumes_mid_epoch_with_the_same_batches(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)
    stream = BatchStream(ds, 8, shuffle=True, drop_last=True, seed=0)
    full = [idx.tolist() for _, _, idx in stream.epoch(2)]
    resumed = [idx.tolist() for _, _, idx in stream.epoch(2, start=3)]
    assert resumed == full[3:]
    assert full != [idx.tolist() for _, _, idx in stream.epoch(3)]  # a new order each epoch


def test_batch_stream_over_files_with_workers(image_tree):
    from barlowtwins.evaluate.features import eval_transform

    ds = labelled_folder(image_tree, "val")
    stream = BatchStream(ds, 5, shuffle=False, drop_last=False, transform=eval_transform(16), workers=1)
    batches = list(stream.epoch(0))
    assert [len(b[2]) for b in batches] == [5, 5, 2]
    assert batches[0][0].shape == (5, 3, 16, 16) and batches[0][0].dtype == torch.uint8
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(12))


def test_global_batches_are_split_into_contiguous_rank_slices(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)
    one = [idx.tolist() for _, _, idx in BatchStream(ds, 16, shuffle=True, drop_last=True, seed=5).epoch(0)]
    shards = [[idx.tolist() for _, _, idx in BatchStream(ds, 8, shuffle=True, drop_last=True, seed=5, rank=r,
                                                          world_size=2).epoch(0)] for r in range(2)]
    assert len(one) == len(shards[0]) == 4
    for b in range(4):
        assert shards[0][b] + shards[1][b] == one[b]  # rank 0 then rank 1: the one-process batch


def test_registry_names_splits_and_storage(fmnist_dir, image_tree):
    assert set(DATASETS) == {"fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "images"}
    assert default_val_split("cifar10") == "test" and default_val_split("folder") == "val"
    assert is_in_memory(build_dataset("fashion-mnist", fmnist_dir)) and DATASETS["fashion-mnist"].in_memory
    assert not is_in_memory(build_dataset("folder", image_tree)) and not DATASETS["folder"].in_memory
    with pytest.raises(DataError, match="has splits train, test, not 'val'"):
        build_dataset("fashion-mnist", fmnist_dir, "val")


def test_unreadable_files_of_every_kind_are_one_line_data_errors(tmp_path, monkeypatch):
    """Truncated JPEG, garbage, an empty file, a format we refuse, and a decompression bomb."""
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "good.jpg", quality=90)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "script.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    for name in ("truncated.jpg", "garbage.png", "empty.jpg", "script.eps"):
        with pytest.raises(DataError, match=f"{name}.*remove or replace the file"):
            read_image(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300 x 300 is over twice the limit
    with pytest.raises(DataError, match="big.png .*DecompressionBombError"):
        read_image(tmp_path / "big.png")
    monkeypatch.undo()
    assert read_image(tmp_path / "good.jpg").size == (64, 64)
    bad = scan_images([str(tmp_path / n) for n in ("good.jpg", "truncated.jpg", "big.png", "empty.jpg")])
    assert [p.rsplit("/", 1)[1] for p, _ in bad] == ["truncated.jpg", "empty.jpg"]


def _jpeg(seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90)
    return buf.getvalue()


def _image_or_data_error(data: bytes) -> None:
    try:
        img = read_image(data, name="fuzz.jpg")
    except DataError as e:
        assert "fuzz.jpg" in str(e) and "\n" not in str(e)
        return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


def test_reader_fuzz_random_bytes_and_damaged_jpegs():
    """Whatever the bytes, the reader returns an RGB image or raises our one-line DataError (never anything else)."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    good = _jpeg()

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
    @hypothesis.given(st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=300).map(lambda b: b"\xff\xd8\xff\xe0" + b),  # a JPEG header, then noise
        st.integers(0, len(good)).map(lambda n: good[:n]),  # truncated anywhere
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(  # one byte changed anywhere
            lambda t: good[: t[0]] + bytes([t[1]]) + good[t[0] + 1:]),
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    ))
    def check(data):
        _image_or_data_error(data)

    check()


def test_an_error_of_the_draft_callback_is_not_taken_for_a_bad_file(tmp_path):
    """read_image's callable draft (the cpu path draws a view's parameters there) runs outside the handlers that
    turn decoder errors into 'unreadable image': a bug in it surfaces as itself."""
    from PIL import Image

    from barlowtwins.data.images import read_image

    path = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path)
    seen = []
    img = read_image(str(path), draft=lambda w, h: seen.append((w, h)) or (16, 12))
    assert seen == [(64, 48)] and img.size == (16, 12)  # 1/4-scale decode from one open

    def broken(w, h):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        read_image(str(path), draft=broken)
