"""The shard writer owns its output folder: a rerun keeps only shards whose bytes match their manifest under
the same plan, says what changed and refuses (or with ``overwrite`` replaces) another plan, removes what it
wrote beyond the plan, and never mixes with .tar files it did not write."""

import json

import pytest
from conftest import make_image_folder

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.shard_writer import check_prefix, verify_shard, write_shards
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.runtime.files import file_sha256


@pytest.fixture
def source(tmp_path):
    return build_dataset("folder", make_image_folder(tmp_path / "imgs", per_class=12, size=32, splits=("train",)),
                         "train")  # 24 files


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_a_damaged_shard_of_the_right_size_is_written_again(source, tmp_path):
    """Case 1: the bytes of a shard damaged in place (same size): once "kept", now checked and rewritten."""
    out = tmp_path / "s"
    first = write_shards(source, out, 6000)
    victim = sorted(out.glob("*.tar"))[1]
    good = victim.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    again = write_shards(source, out, 6000)
    assert again.rewritten == [victim.name] and again.kept == first.shards - 1
    assert victim.read_bytes() == good and again.samples == 24


def test_another_shard_size_is_refused_then_replaced_with_overwrite(source, tmp_path):
    """Case 2: a rerun with another size once left the old shards beyond the new ones (66 samples of 48)."""
    out = tmp_path / "s"
    small = write_shards(source, out, 4000)
    with pytest.raises(ConfigError, match=r"holds the shards of another plan \(--shard-size \(4000 then, 12000 "
                                          r"now\)\); rerun with --overwrite") as e:
        write_shards(source, out, 12000)
    assert "\n" not in str(e.value) and len(list(out.glob("*.tar"))) == small.shards  # nothing touched
    big = write_shards(source, out, 12000, overwrite=True)
    assert big.shards < small.shards and big.removed == small.shards and big.replaced_plan.startswith("--shard-size")
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(e["name"] for e in _manifest(out)["shards"])
    assert len(build_dataset("webdataset", str(out))) == 24


def test_a_different_folder_into_the_same_out_is_refused(source, tmp_path):
    """Case 3: a different source once reported "9 kept" and a manifest naming it over the old images."""
    out = tmp_path / "s"
    write_shards(source, out, 6000)
    other = build_dataset("folder", make_image_folder(tmp_path / "other", classes=("emu", "yak"), per_class=12,
                                                      size=32, splits=("train",), seed=5), "train")
    with pytest.raises(ConfigError, match=r"another plan \(the source \(its files, their sizes or labels\)"):
        write_shards(other, out, 6000)
    write_shards(other, out, 6000, overwrite=True)
    ds = build_dataset("webdataset", str(out))
    assert ds.classes == ["emu", "yak"] and _manifest(out)["plan"]["source"] == str(tmp_path / "other" / "train")


def test_the_same_plan_from_a_moved_source_keeps_its_shards(source, tmp_path):
    out = tmp_path / "s"
    first = write_shards(source, out, 6000)
    moved = tmp_path / "moved"
    (tmp_path / "imgs").rename(moved)
    again = write_shards(build_dataset("folder", moved, "train"), out, 6000)
    assert again.kept == first.shards and not again.rewritten and not again.removed


def test_shards_beyond_the_plan_and_unrecorded_ones_of_ours_are_removed_foreign_ones_refused(source, tmp_path):
    out = tmp_path / "s"
    result = write_shards(source, out, 6000)
    stray = out / f"train-{result.shards + 3:06d}.tar"  # ours by name, in no manifest (a kill before recording)
    stray.write_bytes((out / "train-000000.tar").read_bytes())
    again = write_shards(source, out, 6000)
    assert not stray.exists() and again.removed == 1
    (out / "mine.tar").write_bytes(b"x" * 1024)
    with pytest.raises(DataError, match=r"holds 1 .tar file this command did not write \(mine.tar\)"):
        write_shards(source, out, 6000, overwrite=True)
    assert (out / "mine.tar").exists()


def test_the_manifest_records_the_plan_and_every_shard_verifies(source, tmp_path):
    out = tmp_path / "s"
    write_shards(source, out, 6000, seed=3, prefix="imgs")
    m = _manifest(out)
    assert m["version"] == 2 and m["plan"]["seed"] == 3 and m["plan"]["prefix"] == "imgs"
    assert m["plan"]["samples"] == 24 and m["plan"]["shards"] == len(m["shards"])
    for e in m["shards"]:
        assert file_sha256(out / e["name"]) == e["sha256"] and verify_shard(out / e["name"], e)


def test_an_interrupted_first_run_has_its_plan_recorded_and_finishes(source, tmp_path, monkeypatch):
    import barlowtwins.data.shard_writer as W

    out = tmp_path / "s"
    real, calls = W.write_one, []

    def dies_at_the_third(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job[1])
        return real(job)

    monkeypatch.setattr(W, "write_one", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        write_shards(source, out, 6000)
    monkeypatch.setattr(W, "write_one", real)
    assert len(_manifest(out)["shards"]) == 2 and _manifest(out)["plan"]["shard_bytes"] == 6000
    assert write_shards(source, out, 6000).kept == 2


def test_a_broken_manifest_is_refused_unless_overwrite(source, tmp_path):
    out = tmp_path / "s"
    write_shards(source, out, 6000)
    (out / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="cannot read .*manifest.json.*or rerun with --overwrite"):
        write_shards(source, out, 6000)
    assert write_shards(source, out, 6000, overwrite=True).samples == 24


@pytest.mark.parametrize("prefix", ["a/b", "", ".hidden", "x{0..3}", "a\\b", "a*"])
def test_a_prefix_that_is_not_a_plain_name_is_one_line(prefix):
    """Case 11: --prefix a/b once failed with tarfile's ValueError: Invalid name."""
    with pytest.raises(ConfigError, match="--prefix .*give a plain name"):
        check_prefix(prefix)
    assert check_prefix("train_v2.0") == "train_v2.0"
