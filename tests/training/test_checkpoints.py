"""The run folder's checkpoints: keep the last K with checksums, fall back past a damaged one, survive a full disk,
clean up after killed writers, and read any bytes without a traceback."""

import errno
import hashlib
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barlowtwins.errors import CheckpointError
from barlowtwins.training.checkpoints import CheckpointStore, check_training_checkpoint, remove_stale_temps
from barlowtwins.weights import sources as C


def state(step: int) -> dict:
    return {"format": "barlowtwins", "step": step, "model": {"w": torch.full((3,), float(step))},
            "optimizer": {"state": {}, "param_groups": []}, "config": {"seed": 0}}


def test_keeps_the_last_k_with_checksums(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        store.save(state(step))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.1.pth", "checkpoint.1.pth.sha256", "checkpoint.pth", "checkpoint.pth.sha256"]
    for path, step in ((tmp_path / "checkpoint.pth", 3), (tmp_path / "checkpoint.1.pth", 2)):
        assert C.load_checkpoint(path)["step"] == step
        digest = hashlib.sha256(path.read_bytes()).hexdigest()  # an independent hash of the bytes on disk
        assert (path.parent / (path.name + ".sha256")).read_text().strip() == digest
    ckpt, path, problems = store.load_latest()
    assert ckpt["step"] == 3 and path.name == "checkpoint.pth" and problems == []


def test_keep_one_and_three(tmp_path):
    for keep in (1, 3):
        store = CheckpointStore(tmp_path / str(keep), keep=keep)
        for step in range(5):
            store.save(state(step))
        assert [C.load_checkpoint(p)["step"] for p in store.existing()] == [4, 3, 2][:keep]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete-checksum-and-truncate"])
def test_a_damaged_latest_is_reported_and_the_previous_used(tmp_path, damage):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state(1))
    store.save(state(2))
    latest = tmp_path / "checkpoint.pth"
    data = latest.read_bytes()
    if damage == "flip":  # same length, one byte changed inside the tensor data: only the checksum sees it
        i = data.index(torch.full((3,), 2.0).numpy().tobytes())
        latest.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        latest.write_bytes(data[: len(data) // 2])
        if damage.startswith("delete"):
            (tmp_path / "checkpoint.pth.sha256").unlink()
    ckpt, path, problems = store.load_latest()
    assert ckpt["step"] == 1 and path.name == "checkpoint.1.pth"
    assert len(problems) == 1 and "checkpoint.pth" in problems[0] and "\n" not in problems[0]


def test_nothing_usable_is_one_error(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_latest() is None
    (tmp_path / "checkpoint.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        store.load_latest()


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state(1))
    store.save(state(2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = torch.save

    def full_disk(obj, f):
        real_save(obj, f)  # part of the file is written, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C.torch, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        store.save(state(3))
    message = str(e.value)
    assert "disk full" in message and "previous checkpoint" in message and "intact" in message
    assert "\n" not in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "no file changed, no temp file left"


def test_stale_temporary_files_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / f".checkpoint.pth.tmp-{dead}"
    stale.write_bytes(b"x" * 1000)
    mine = tmp_path / f".checkpoint.pth.tmp-{os.getpid()}"  # a live writer's file stays
    mine.write_bytes(b"y")
    keep = tmp_path / "checkpoint.pth"
    keep.write_bytes(b"z")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and keep.exists()


@pytest.mark.parametrize("change,match", [
    ({"step": None}, "no valid step"),
    ({"step": "12"}, "no valid step"),
    ({"step": -3}, "no valid step"),
    ({"config": None}, "no valid config"),
    ({"config": [1, 2]}, "no valid config"),
    ({"format": "other"}, "not a barlowtwins training checkpoint"),
    ({"model": None}, "not a barlowtwins training checkpoint"),
])
def test_a_checkpoint_missing_what_a_resume_needs(tmp_path, change, match):
    ckpt = {**state(1), **change}
    with pytest.raises(CheckpointError, match=match):
        check_training_checkpoint(ckpt, tmp_path / "checkpoint.pth")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), cut=st.floats(0, 1))
def test_fuzz_the_checkpoint_reader(tmp_path_factory, data, cut):
    """Random bytes, and a real checkpoint truncated anywhere or with random bytes appended, give a checkpoint or a
    one-line CheckpointError: never another exception."""
    folder = tmp_path_factory.mktemp("fuzz")
    store = CheckpointStore(folder, keep=1)
    store.save(state(5))
    good = (folder / "checkpoint.pth").read_bytes()
    for content in (data, good[: int(cut * len(good))], good + data):
        (folder / "checkpoint.pth").write_bytes(content)
        (folder / "checkpoint.pth.sha256").unlink(missing_ok=True)  # no checksum: the reader itself must cope
        try:
            ckpt, _, _ = store.load_latest()
            assert ckpt["step"] == 5
        except CheckpointError as e:
            assert "\n" not in str(e)


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs (no clean-up either, see below)."""


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_a_kill_between_any_two_file_operations_of_a_save_leaves_a_resumable_folder(tmp_path, monkeypatch, keep):
    """Every rename, removal and file creation of a checkpoint save is a point where the process can die. For each
    point in turn: the folder resumes from the previous or the new checkpoint, and the next save and resume work."""
    from barlowtwins.runtime import files

    def run_until(folder, kill_at):
        """Save step 3 over steps 1 and 2, dying at file operation ``kill_at``; how many operations there were."""
        count = [0]
        real_replace, real_unlink, real_open = os.replace, type(folder).unlink, open

        def tick():
            count[0] += 1
            if count[0] == kill_at:
                raise _Killed

        def replace(src, dst):
            tick()
            return real_replace(src, dst)

        def unlink(self, missing_ok=False):
            tick()
            return real_unlink(self, missing_ok=missing_ok)

        def opener(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax"):
                tick()
            return real_open(file, mode, *args, **kwargs)

        store = CheckpointStore(folder, keep=keep)
        store.save(state(1))
        store.save(state(2))
        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            m.setattr(type(folder), "unlink", unlink)
            m.setattr("builtins.open", opener)
            m.setattr(files, "_remove", lambda path: None)  # a killed process cleans nothing up
            try:
                store.save(state(3))
            except _Killed:
                pass
        return count[0]

    total = run_until(tmp_path / "count", kill_at=0)  # no kill: count the operations
    assert total >= 4, "the save was not instrumented"
    for kill_at in range(1, total + 1):
        folder = tmp_path / f"kill-{kill_at}"
        run_until(folder, kill_at)
        store = CheckpointStore(folder, keep=keep)
        ckpt, path, problems = store.load_latest()
        assert ckpt["step"] in (2, 3), (kill_at, path, problems)
        assert problems == [], f"killed at operation {kill_at} of {total}: {problems}"
        remove_stale_temps(folder)
        store.save(state(4))
        assert store.load_latest()[0]["step"] == 4
        kept = [C.load_checkpoint(p)["step"] for p in store.existing()]
        assert kept[:2] == [4, ckpt["step"]][:keep] and kept == sorted(set(kept), reverse=True), kept
