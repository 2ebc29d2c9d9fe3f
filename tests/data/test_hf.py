"""Hugging Face data sets and Parquet tables written by the test: a save_to_disk folder (written by pyarrow in
that layout, and by `datasets` itself when installed), Parquet splits, column choice, and bad input."""

import io
import json

import pytest
import torch
from PIL import Image

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.hf import TableRow
from barlowtwins.data.images import read_image
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.errors import DataError
from barlowtwins.transforms.spec import augment_config

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
CPU = torch.device("cpu")


def encoded(i, fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (20 + i % 3, 18), (10 * i % 256, 100, 200)).save(buf, format=fmt)
    return buf.getvalue()


def image_table(n=8, image="image", label="label", struct=True):
    images = [{"bytes": encoded(i), "path": None} for i in range(n)] if struct else [encoded(i) for i in range(n)]
    columns = {image: images, "caption": [f"c{i}" for i in range(n)]}
    if label:
        columns[label] = [i % 2 for i in range(n)]
    return pa.table(columns)


def save_to_disk_layout(folder, t, class_names=("cat", "dog")):
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow stream files, state.json, dataset_info.json."""
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, t.schema) as writer:
            writer.write_table(t)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    features = {"image": {"_type": "Image"}, "caption": {"dtype": "string", "_type": "Value"},
                "label": {"names": list(class_names), "_type": "ClassLabel"}}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    return folder


def test_a_save_to_disk_folder_reads_images_labels_and_class_names(tmp_path):
    ds = build_dataset("hf", str(save_to_disk_layout(tmp_path / "ds", image_table())))
    assert len(ds) == 8 and ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1] * 4
    assert isinstance(ds.files[3], TableRow) and str(ds.files[3]).endswith(".arrow:row3")
    img, label = ds[3]
    assert img.size == (20, 18) and label == 1


def test_parquet_splits_and_named_columns(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(image_table(6, image="img", label="fine", struct=False), tmp_path / "data" / "train-00000.parquet")
    pq.write_table(image_table(4, image="img", label="fine", struct=False), tmp_path / "data" / "test-00000.parquet")
    train = build_dataset("hf", str(tmp_path / "data"), "train", image_column="img", label_column="fine")
    test = build_dataset("hf", str(tmp_path / "data"), "test", image_column="img", label_column="fine")
    assert len(train) == 6 and len(test) == 4 and train.labels.tolist() == [0, 1, 0, 1, 0, 1]
    auto = build_dataset("hf", str(tmp_path / "data"), "train")  # the binary column found; no label column named
    assert len(auto) == 6 and auto.labels.tolist() == [-1] * 6
    with pytest.raises(DataError, match="has no column 'picture'.*image_column"):
        build_dataset("hf", str(tmp_path / "data"), "train", image_column="picture")
    with pytest.raises(DataError, match="has no column 'y'.*label_column"):
        build_dataset("hf", str(tmp_path / "data"), "train", label_column="y")


def test_rows_go_through_the_data_paths_like_files_and_a_bad_row_is_skipped(tmp_path, capsys):
    t = image_table(8)
    rows = t.column("image").to_pylist()
    rows[5] = {"bytes": b"not an image", "path": None}
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(rows, type=t.schema.field("image").type))
    ds = build_dataset("hf", str(save_to_disk_layout(tmp_path / "ds", t)))
    pipe = build_pipeline(ds, augment_config(16), batch_size=4, seed=0, device=CPU, data_path="cpu", workers=2)
    for step, (batch, labels, _) in enumerate(pipe.epoch(0)):
        x1, x2 = pipe.views(batch, step)
        assert x1.shape == (4, 3, 16, 16) and labels.shape == (4,)
    assert list(pipe.skipped) == [str(ds.files[5])]
    with pytest.raises(DataError, match="corrupt or unreadable image"):
        read_image(ds.files[5])


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("hf", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data set in"):
        build_dataset("hf", str(tmp_path / "empty"))
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="has no image column"):
        build_dataset("hf", str(tmp_path / "t.parquet"))


def test_a_folder_written_by_datasets_itself(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = datasets.Dataset.from_dict({"image": [Image.open(io.BytesIO(encoded(i))) for i in range(6)],
                                    "label": [i % 3 for i in range(6)]},
                                   features=datasets.Features({"image": datasets.Image(),
                                                               "label": datasets.ClassLabel(names=["a", "b", "c"])}))
    datasets.DatasetDict({"train": d, "test": d.select(range(3))}).save_to_disk(str(tmp_path / "dd"))
    train = build_dataset("hf", str(tmp_path / "dd"), "train")
    test = build_dataset("hf", str(tmp_path / "dd"), "test")
    assert len(train) == 6 and len(test) == 3 and train.classes == ["a", "b", "c"]
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2] and train[4][0].size == (21, 18)
    with pytest.raises(DataError, match="has splits train, test, not 'val'"):
        build_dataset("hf", str(tmp_path / "dd"), "val")


def test_a_truncated_table_or_a_broken_saved_folder_is_one_line(tmp_path):
    pq.write_table(image_table(4, struct=False), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "t.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read the table .*t.parquet"):
        build_dataset("hf", str(tmp_path / "cut"))
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{not json")
    with pytest.raises(DataError, match="state.json.*re-save the data set"):
        build_dataset("hf", str(tmp_path / "saved"))


def test_table_labels_are_read_by_the_one_label_reader(tmp_path):
    """Float labels once became 0/1 silently, a string column a ValueError, a label of 1e12 a list of 10^12
    class names (the process killed)."""
    images = [encoded(i) for i in range(4)]
    (tmp_path / "f").mkdir()
    pq.write_table(pa.table({"image": images, "label": [0.5, 1.7, 0.0, 1.0]}), tmp_path / "f" / "train.parquet")
    with pytest.raises(DataError, match="column 'label': label 0 is the number 0.5"):
        build_dataset("hf", str(tmp_path / "f"), "train")
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"image": images, "label": ["dog", "cat", None, "dog"]}), tmp_path / "s" / "train.parquet")
    ds = build_dataset("hf", str(tmp_path / "s"), "train")
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [1, 0, -1, 1] and ds.named_classes
    (tmp_path / "b").mkdir()
    pq.write_table(pa.table({"image": images, "label": [0, 1, 10 ** 12, 0]}), tmp_path / "b" / "train.parquet")
    with pytest.raises(DataError, match="label 1000000000000 is not a class index"):
        build_dataset("hf", str(tmp_path / "b"), "train")
