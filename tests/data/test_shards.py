"""WebDataset tar shards written by the test (by `barlowtwins shard` and by hand with tarfile): naming, indexing,
the same images and views as the folder, the shard-local order over ranks and epochs, resume, and bad input."""

import io
import json
import tarfile

import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from barlowtwins.data.datasets import ImageFiles, build_dataset
from barlowtwins.data.fingerprint import compare, fingerprint
from barlowtwins.data.images import read_file_bytes, read_image
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.data.shard_writer import parse_size, verify_shard, write_shards
from barlowtwins.data.shards import WINDOW, ShardOrder, TarMember, expand_braces, shard_dataset, shard_sources
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.transforms.spec import augment_config

CPU = torch.device("cpu")


def tar_by_hand(path, samples):
    """A WebDataset shard: (key, {ext: bytes}) per sample, members in order."""
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def jpeg(seed, size=24):
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (size, size + 4, 3), generator=g, dtype=torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "imgs", per_class=10, size=32, splits=("train", "val"))  # 20 files a split


@pytest.fixture
def shards(folder, tmp_path):
    ds = build_dataset("folder", folder, "train")
    result = write_shards(ds, tmp_path / "shards", shard_bytes=6000, seed=0)
    assert result.shards >= 3 and result.samples == 20 and not result.skipped
    return tmp_path / "shards", ds


def test_brace_patterns_folders_and_list_files(tmp_path):
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{x,y}-{1..2}") == ["x-1", "x-2", "y-1", "y-2"]
    for i in range(3):
        tar_by_hand(tmp_path / f"s-{i:03d}.tar", [(f"k{i}", {"jpg": jpeg(i)})])
    assert shard_sources(str(tmp_path / "s-{000..002}.tar")) == [str(tmp_path / f"s-{i:03d}.tar") for i in range(3)]
    assert shard_sources(str(tmp_path)) == [str(tmp_path / f"s-{i:03d}.tar") for i in range(3)]
    (tmp_path / "list.txt").write_text("s-002.tar\ns-000.tar\n")
    assert shard_sources(str(tmp_path / "list.txt")) == [str(tmp_path / "s-002.tar"), str(tmp_path / "s-000.tar")]
    with pytest.raises(DataError, match=r"shard .*s-003.tar does not exist \(1 of 4 missing"):
        shard_sources(str(tmp_path / "s-{000..003}.tar"))
    with pytest.raises(DataError, match="matches nothing"):
        shard_sources(str(tmp_path / "none-*.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards"):
        shard_sources(str(tmp_path / "empty"))


def test_written_shards_hold_the_folders_images_and_labels_byte_for_byte(shards):
    out, folder_ds = shards
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"] and len(manifest["shards"]) == manifest["plan"]["shards"]
    for entry in manifest["shards"]:
        assert verify_shard(out / entry["name"], entry)  # the manifest's offsets are the tar's
    ds = build_dataset("webdataset", str(out))
    assert len(ds) == 20 and ds.classes == ["cat", "dog"] and isinstance(ds.files[0], TarMember)
    # every folder file is in the shards once, with its label and its exact bytes
    originals = {read_file_bytes(p): label for p, label in zip(folder_ds.files, folder_ds.labels.tolist())}
    stored = {read_file_bytes(f): label for f, label in zip(ds.files, ds.labels.tolist())}
    assert stored == originals
    img, label = ds[0]
    assert img.mode == "RGB" and label in (0, 1)


def test_the_index_from_the_headers_equals_the_manifests(shards):
    out, _ = shards
    with_manifest = shard_dataset(str(out))
    (out / "manifest.json").rename(out / "manifest.bak")
    from_headers = shard_dataset(str(out))
    assert [(f.shard, f.member, f.offset, f.size) for f in with_manifest.files] == \
        [(f.shard, f.member, f.offset, f.size) for f in from_headers.files]
    assert torch.equal(with_manifest.labels, from_headers.labels)


def test_a_hand_made_shard_with_cls_and_json_labels_and_a_sample_without_image(tmp_path, capsys):
    tar_by_hand(tmp_path / "a.tar", [("x/one", {"jpg": jpeg(1), "cls": b"2"}),
                                     ("x/two", {"png": _png(), "json": json.dumps({"label": 0}).encode()}),
                                     ("x/three", {"txt": b"no image here"}),
                                     ("x/four", {"webp": _webp()})])
    ds = shard_dataset(str(tmp_path / "a.tar"))
    assert [f.member for f in ds.files] == ["x/one.jpg", "x/two.png", "x/four.webp"]
    assert ds.labels.tolist() == [2, 0, -1]
    assert "1 samples in the shards" in capsys.readouterr().err
    assert all(read_image(f).size[0] > 0 for f in ds.files)


def _png():
    buf = io.BytesIO()
    Image.new("RGB", (20, 16), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _webp():
    buf = io.BytesIO()
    Image.new("RGB", (18, 18), (200, 20, 30)).save(buf, format="WEBP")
    return buf.getvalue()


def test_shard_and_folder_give_identical_views_for_the_same_files_in_the_same_order(shards):
    out, _ = shards
    ds = build_dataset("webdataset", str(out))
    # the folder data set of the same files, indexed as the shards index them
    extracted = out.parent / "extracted"
    extracted.mkdir()
    paths = []
    for k, f in enumerate(ds.files):
        p = extracted / f"{k:03d}_{f.member}"
        p.write_bytes(read_file_bytes(f))
        paths.append(str(p))
    folder_ds = ImageFiles(paths, ds.labels.tolist())
    aug = augment_config(24)
    for kind in ("cpu", "device"):
        a = build_pipeline(ds, aug, batch_size=4, seed=1, device=CPU, data_path=kind, workers=0)
        b = build_pipeline(folder_ds, aug, batch_size=4, seed=1, device=CPU, data_path=kind, workers=0)
        # the same sample order is needed for the same views: give the folder the shards' order
        b.order = a.order
        batches = 0
        for step, ((ba, _, ia), (bb, _, ib)) in enumerate(zip(a.epoch(0), b.epoch(0))):
            assert torch.equal(ia, ib)
            assert all(torch.equal(x, y) for x, y in zip(a.views(ba, step), b.views(bb, step)))
            batches += 1
        assert batches == len(ds) // 4


def test_the_order_is_shard_local_covers_every_sample_once_and_ranks_split_one_process(shards):
    out, _ = shards
    ds = build_dataset("webdataset", str(out))
    one = ds.batch_order(4, seed=3, rank=0, world_size=1)
    ranks = [ds.batch_order(2, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        whole = list(one)
        parts = [list(r) for r in ranks]
        assert len(set(whole)) == len(whole) == len(ds) // 4 * 4  # each sample at most once; full batches
        merged = [i for b in range(len(whole) // 4) for r in range(2) for i in parts[r][2 * b: 2 * b + 2]]
        assert merged == whole  # rank r holds slice r of every global batch
        assert sorted(set(parts[0]) | set(parts[1])) == sorted(whole)
    one.set_epoch(0)
    e0 = list(one)
    one.set_epoch(1)
    assert list(one) != e0  # another epoch, another order
    one.set_epoch(0)
    assert list(one) == e0  # a function of (seed, epoch)
    # shard-local: the first window of the order reads at most WINDOW shards
    first = [int(ds.shard_of[i]) for i in one.order()[: 4]]
    assert len(set(first)) <= WINDOW


def test_a_shard_run_resumed_mid_epoch_draws_the_uninterrupted_batches(shards):
    out, _ = shards
    ds = build_dataset("webdataset", str(out))
    pipe = build_pipeline(ds, augment_config(16), batch_size=4, seed=2, device=CPU, data_path="cpu", workers=0)
    straight = [(idx.tolist(), pipe.views(b, s)) for s, (b, _, idx) in enumerate(pipe.epoch(0))]
    resumed = [(idx.tolist(), pipe.views(b, 2 + s)) for s, (b, _, idx) in enumerate(pipe.epoch(0, start=2))]
    assert len(resumed) == len(straight) - 2
    for (ia, va), (ib, vb) in zip(straight[2:], resumed):
        assert ia == ib and all(torch.equal(x, y) for x, y in zip(va, vb))


def test_a_corrupt_image_inside_a_shard_is_skipped_and_named(tmp_path, capsys):
    tar_by_hand(tmp_path / "a.tar", [(f"k{i}", {"jpg": jpeg(i) if i != 2 else b"\xff\xd8\xffnot a jpeg"})
                                     for i in range(8)])
    ds = build_dataset("webdataset", str(tmp_path / "a.tar"))
    pipe = build_pipeline(ds, augment_config(16), batch_size=4, seed=0, device=CPU, data_path="cpu", workers=0)
    for step, (batch, _, _) in enumerate(pipe.epoch(0)):
        pipe.views(batch, step)
    assert list(pipe.skipped) == [f"{tmp_path / 'a.tar'}:k2.jpg"]
    assert "a.tar:k2.jpg" in capsys.readouterr().err


def test_a_truncated_shard_is_one_line_and_a_member_cut_short_is_an_unreadable_sample(tmp_path):
    tar_by_hand(tmp_path / "a.tar", [(f"k{i}", {"jpg": jpeg(i, size=40)}) for i in range(4)])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "broken.tar").write_bytes(data[:700])  # inside the first member's data: headers end there
    with pytest.raises(DataError, match="broken.tar is truncated or not a tar file"):
        shard_dataset(str(tmp_path / "broken.tar"))
    ds = shard_dataset(str(tmp_path / "a.tar"))
    last = ds.files[-1]
    (tmp_path / "a.tar").write_bytes(data[: last.offset + last.size // 2])  # the last image cut in half
    cut = TarMember(last.shard, last.member, last.offset, last.size)
    with pytest.raises(DataError, match="truncated"):
        read_image(cut)


def test_a_resume_on_changed_shards_is_noticed(shards, tmp_path):
    out, _ = shards
    before = fingerprint(build_dataset("webdataset", str(out)))
    assert compare(before, fingerprint(build_dataset("webdataset", str(out)))) is None
    first = sorted(out.glob("*.tar"))[0]
    tar_by_hand(first, [("z", {"jpg": jpeg(9)})])  # a shard re-written with other samples
    (out / "manifest.json").unlink()
    change = compare(before, fingerprint(build_dataset("webdataset", str(out))))
    assert change and change.startswith("the data set changed since the checkpoint was written")


def test_pipe_sources_are_streamed_once_into_the_cache(tmp_path, monkeypatch):
    tar_by_hand(tmp_path / "src.tar", [("a", {"jpg": jpeg(0)}), ("b", {"jpg": jpeg(1)})])
    monkeypatch.setenv("BARLOWTWINS_SHARD_CACHE", str(tmp_path / "cache"))
    ds = shard_dataset(f"pipe:cat {tmp_path / 'src.tar'}")
    assert len(ds) == 2 and str(tmp_path / "cache") in ds.files[0].shard
    with pytest.raises(DataError, match="the shard command 'false' failed"):
        shard_dataset("pipe:false")


def test_splits_by_pattern_or_sub_folder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        tar_by_hand(tmp_path / split / "s-0.tar", [(f"{split}{i}", {"jpg": jpeg(i), "cls": b"0"}) for i in range(3)])
    assert build_dataset("webdataset", str(tmp_path), "val").files[0].member == "val0.jpg"
    assert build_dataset("webdataset", str(tmp_path / "{split}" / "s-0.tar"), "train").files[0].member == "train0.jpg"


def test_shard_sizes_and_options():
    assert parse_size("500MB") == 500_000_000 and parse_size("64MiB") == 64 * 2 ** 20 and parse_size("1.5g") == 1.5e9
    for bad in ("big", "-5MB", "0", "5XB"):
        with pytest.raises(ConfigError, match="--shard-size"):
            parse_size(bad)
    with pytest.raises(DataError, match="image_column applies to hf, not dataset webdataset"):
        build_dataset("webdataset", "x", image_column="img")


def test_with_a_window_of_one_shard_each_shard_is_read_in_one_stretch(shards):
    out, _ = shards
    ds = build_dataset("webdataset", str(out))
    order = ShardOrder(ds.shard_of, 4, seed=5, rank=0, world_size=1, window=1).order().tolist()
    runs = [int(ds.shard_of[order[0]])]
    for i in order[1:]:
        if int(ds.shard_of[i]) != runs[-1]:
            runs.append(int(ds.shard_of[i]))
    assert sorted(runs) == list(range(len(ds.shards)))  # one stretch per shard, every shard once
    assert sorted(order) == list(range(len(ds)))


def test_two_ranks_over_shards_draw_the_batches_and_views_of_one_process(shards):
    out, _ = shards
    ds = build_dataset("webdataset", str(out))
    aug = augment_config(16)
    one = build_pipeline(ds, aug, batch_size=4, seed=3, device=CPU, data_path="cpu", workers=0)
    ranks = [build_pipeline(ds, aug, batch_size=2, seed=3, rank=r, world=2, device=CPU, data_path="cpu", workers=0)
             for r in range(2)]
    for epoch in (0, 1):
        whole = [(idx.tolist(), one.views(b, epoch * len(one) + s)) for s, (b, _, idx) in enumerate(one.epoch(epoch))]
        parts = [[(idx.tolist(), p.views(b, epoch * len(p) + s)) for s, (b, _, idx) in enumerate(p.epoch(epoch))]
                 for p in ranks]
        seen = [i for r in range(2) for idx, _ in parts[r] for i in idx]
        assert len(seen) == len(set(seen)) == len(ds) // 4 * 4  # every sample at most once an epoch, across ranks
        for b, (idx, (x1, x2)) in enumerate(whole):
            assert parts[0][b][0] + parts[1][b][0] == idx
            torch.testing.assert_close(torch.cat([parts[0][b][1][0], parts[1][b][1][0]]), x1, atol=1e-6, rtol=0)
            torch.testing.assert_close(torch.cat([parts[0][b][1][1], parts[1][b][1][1]]), x2, atol=1e-6, rtol=0)


def test_a_file_that_is_neither_a_shard_nor_a_list_is_one_line(tmp_path):
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="cannot read .*data.bin as a shard list"):
        shard_dataset(str(tmp_path / "data.bin"))
    (tmp_path / "cut.tar").write_bytes(b"\x00" * 100)  # a .tar name is a shard, whatever its content
    with pytest.raises(DataError, match="cut.tar"):
        shard_dataset(str(tmp_path / "cut.tar"))


# ---- a manifest is checked before it is trusted; every bad record is one line ------------------------------

def _edit_manifest(out, change):
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    (out / "manifest.json").write_text(json.dumps(m))


def test_a_shard_cut_at_a_member_boundary_is_said_and_refused_under_strict_data(shards, capsys):
    """Case 4: a tar truncated exactly between members, with its manifest: 45 of 48 samples, no word. Now one
    warning with the count, and --strict-data refuses."""
    out, _ = shards
    first = sorted(out.glob("*.tar"))[0]
    entry = json.loads((out / "manifest.json").read_text())["shards"][0]
    last = entry["samples"][-1]  # cut where the last sample's first member (its image) starts
    first.write_bytes(first.read_bytes()[: last[2] - 512])
    ds = shard_dataset(str(out))
    err = capsys.readouterr().err
    assert len(ds) == 19 and "warning: 1 samples that the manifest lists are gone from 1 truncated shard" in err
    with pytest.raises(DataError, match="is truncated: 1 of the samples its manifest lists are gone"):
        ds.verify_integrity()
    with pytest.raises(DataError, match="truncated"):
        build_pipeline(ds, augment_config(16), batch_size=4, seed=0, device=CPU, data_path="cpu", workers=0,
                       strict=True)


def test_a_manifest_whose_offsets_do_not_match_the_shard_is_refused(shards):
    """Case 5: swapped offsets were read as they were (another sample's bytes, or a failed decode)."""
    out, _ = shards

    def swap(m):  # two samples' offsets and sizes exchanged, the digest recomputed as a careless tool would
        from barlowtwins.data.manifest import index_digest
        s = m["shards"][0]["samples"]
        s[0][1], s[-1][1] = s[-1][1], s[0][1]
        s[0][0], s[-1][0] = s[-1][0], s[0][0]
        m["shards"][0]["index_sha256"] = index_digest(s)

    _edit_manifest(out, swap)
    with pytest.raises(DataError, match="does not match .*the tar headers at its offsets name other members"):
        shard_dataset(str(out))


def test_a_member_read_at_a_wrong_offset_is_an_unreadable_sample_not_another_image(shards):
    out, _ = shards
    ds = shard_dataset(str(out))
    a, b = ds.files[0], ds.files[1]
    wrong = TarMember(a.shard, a.member, b.offset, b.size)  # a's name, b's bytes
    with pytest.raises(DataError, match="names another member: the manifest does not match the shard"):
        wrong.read_bytes()
    assert TarMember(a.shard, a.member, a.offset, a.size).read_bytes() == a.read_bytes()


def test_a_zeroed_sha256_or_dropped_samples_in_the_manifest(shards):
    out, _ = shards
    _edit_manifest(out, lambda m: m["shards"][0].__setitem__("sha256", "0" * 64))
    ds = shard_dataset(str(out))
    with pytest.raises(DataError, match="does not match the SHA-256 its manifest records"):
        ds.verify_integrity()
    _edit_manifest(out, lambda m: m["shards"][1]["samples"].pop())
    with pytest.raises(DataError, match="does not match its index_sha256"):
        shard_dataset(str(out))


def test_a_resume_on_a_changed_manifest_is_noticed(shards):
    """Case 5: the fingerprint was names, count and size: an edited manifest passed."""
    out, _ = shards
    before = fingerprint(shard_dataset(str(out)))

    def relabel(m):  # the labels of one shard flipped, its digest dropped (a version-1 manifest has none)
        entry = m["shards"][0]
        del entry["index_sha256"]
        for sample in entry["samples"]:
            sample[4] = 1 - sample[4]

    _edit_manifest(out, relabel)
    change = compare(before, fingerprint(shard_dataset(str(out))))
    assert change and "the shards' index or manifest" in change


@pytest.mark.parametrize("change, match", [
    (lambda s: s.__setitem__(3, 10 ** 12), "outside the"),  # once a MemoryError in f.read
    (lambda s: s.__setitem__(2, "abc"), "has offset 'abc'"),  # once ValueError: not enough values to unpack
])
def test_a_manifest_with_impossible_records_is_one_line(shards, change, match):
    out, _ = shards

    def edit(m):
        change(m["shards"][0]["samples"][0])
        del m["shards"][0]["index_sha256"]

    _edit_manifest(out, edit)
    with pytest.raises(DataError, match=match):
        shard_dataset(str(out))
    _edit_manifest(out, lambda m: m["shards"][0].__setitem__("samples", [["a"]]))
    with pytest.raises(DataError, match="not \\[key, member, offset, size, label\\]"):
        shard_dataset(str(out))


def test_a_key_twice_in_a_shard_is_two_samples_and_one_warning(tmp_path, capsys):
    """Case 6: 12 members with 6 keys each twice became 6 samples silently."""
    tar_by_hand(tmp_path / "a.tar", [(f"k{i % 6}", {"jpg": jpeg(i), "cls": b"0"}) for i in range(12)])
    ds = shard_dataset(str(tmp_path / "a.tar"))
    assert len(ds) == 12
    assert "warning: 6 samples in the shards of" in capsys.readouterr().err


def test_labels_of_shards_are_read_as_tables_are(tmp_path):
    """Cases 9 and 10: a .cls of 1e12 allocated a list of 10^12 class names; text labels were unlabelled in
    pretraining and a TypeError in kNN."""
    tar_by_hand(tmp_path / "big.tar", [("a", {"jpg": jpeg(0), "cls": b"1000000000000"})])
    with pytest.raises(DataError, match="label 1000000000000 is not a class index"):
        shard_dataset(str(tmp_path / "big.tar"))
    tar_by_hand(tmp_path / "names.tar", [(f"k{i}", {"jpg": jpeg(i), "cls": [b"dog", b"cat"][i % 2]})
                                         for i in range(4)])
    ds = shard_dataset(str(tmp_path / "names.tar"))
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1, 0] and ds.named_classes
    tar_by_hand(tmp_path / "float.tar", [("a", {"jpg": jpeg(0), "json": b'{"label": 0.5}'})])
    with pytest.raises(DataError, match="is the number 0.5"):
        shard_dataset(str(tmp_path / "float.tar"))


def test_numbered_shards_align_with_a_named_split_by_index(folder, tmp_path, capsys):
    """Case 6: shards copied without their manifest (classes '0', '1') against a val split whose manifest names
    'cat', 'dog' once scored kNN top-1 0.00. The numbers are indices into the named split's classes."""
    from barlowtwins.data.datasets import align_classes

    for split in ("train", "val"):
        write_shards(build_dataset("folder", folder, split), tmp_path / split, shard_bytes=6000)
    (tmp_path / "train" / "manifest.json").unlink()
    train, val = shard_dataset(str(tmp_path / "train")), shard_dataset(str(tmp_path / "val"))
    assert train.classes == ["0", "1"] and not train.named_classes and val.classes == ["cat", "dog"]
    aligned, alignment = align_classes(train, val)
    assert torch.equal(aligned.labels, val.labels) and alignment.unscorable_images == 0
    assert "records no class names; its labels are taken as indices" in capsys.readouterr().err
    back, _ = align_classes(val, train)
    assert torch.equal(back.labels, train.labels)


def test_a_pipe_that_writes_nothing_is_never_cached(tmp_path, monkeypatch):
    """Case 7: an empty result of a pipe: source was cached, and every later run failed on it."""
    monkeypatch.setenv("BARLOWTWINS_SHARD_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src.tar"
    cmd = f"pipe:cat {src} 2>/dev/null || true"
    src.write_bytes(b"")
    with pytest.raises(DataError, match="exited 0 but wrote nothing"):
        shard_dataset(cmd)
    src.write_bytes(b"x" * 700)
    with pytest.raises(DataError, match="exited 0 but wrote 700 bytes that are not a whole tar file"):
        shard_dataset(cmd)
    assert not any((tmp_path / "cache").iterdir())
    tar_by_hand(src, [("a", {"jpg": jpeg(0)})])  # the source fixed: the next run reads it
    assert len(shard_dataset(cmd)) == 1


def test_an_empty_cache_file_an_earlier_version_kept_is_fetched_again(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("BARLOWTWINS_SHARD_CACHE", str(tmp_path / "cache"))
    tar_by_hand(tmp_path / "src.tar", [("a", {"jpg": jpeg(0)})])
    cmd = f"cat {tmp_path / 'src.tar'}"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / (hashlib.sha256(cmd.encode()).hexdigest()[:20] + ".tar")).write_bytes(b"")
    assert len(shard_dataset(f"pipe:{cmd}")) == 1


def test_a_list_files_comments_are_not_shards(tmp_path):
    for i in range(2):
        tar_by_hand(tmp_path / f"s-{i}.tar", [(f"k{i}", {"jpg": jpeg(i)})])
    (tmp_path / "list.txt").write_text("# the shards\n  # an indented comment\ns-0.tar   # the first\n\ns-1.tar\n")
    assert shard_sources(str(tmp_path / "list.txt")) == [str(tmp_path / "s-0.tar"), str(tmp_path / "s-1.tar")]
