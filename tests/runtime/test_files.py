"""The one atomic write: the target holds its old or its new content, never a part, and no temporary file stays."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from barlowtwins.runtime.files import (
    atomic_write,
    file_sha256,
    save_atomic,
    stale_temp_pid,
    temp_name,
    write_bytes_atomic,
    write_text_atomic,
)
from barlowtwins.weights.run_files import load_checkpoint


def test_writes_and_replaces_leaving_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the folder is created
    write_text_atomic(path, "one\n")
    assert path.read_text() == "one\n"
    write_text_atomic(path, "two\n")
    write_bytes_atomic(tmp_path / "b.bin", b"\0\1")
    assert path.read_text() == "two\n" and (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]


@pytest.mark.parametrize("where", ["write", "before_replace"])
def test_a_failure_leaves_the_old_file_and_no_temporary_file(tmp_path, where):
    path = tmp_path / "metrics.jsonl"
    path.write_text("old\n")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half of the new")
            if where == "write":
                raise OSError(28, "No space left on device")

    def before_replace():
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        atomic_write(path, write, before_replace=before_replace if where == "before_replace" else None)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_an_interrupt_mid_write_also_cleans_up(tmp_path):
    path = tmp_path / "x.txt"

    def write(tmp):
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write)
    assert list(tmp_path.iterdir()) == []


def test_before_replace_runs_after_the_new_content_is_complete(tmp_path):
    path = tmp_path / "c.pth"
    seen = []
    digest = save_atomic({"w": torch.arange(5)}, path, before_replace=lambda: seen.append(
        [(p.name, p.stat().st_size > 0) for p in tmp_path.iterdir()]))
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0][1]  # only the (full) temporary file, not yet renamed
    assert stale_temp_pid(seen[0][0][0]) == os.getpid()
    assert digest == file_sha256(path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(5))


def test_the_temporary_name_keeps_the_suffix_and_is_unique(tmp_path):
    path = tmp_path / "emb.npy"
    a, b = temp_name(path), temp_name(path)
    assert a != b and a.parent == tmp_path and a.suffix == ".npy" and a.name.startswith(".emb.npy.tmp-")
    assert stale_temp_pid(a.name) == os.getpid()
    assert stale_temp_pid(".checkpoint.pth.tmp-4242") == 4242  # the name earlier versions wrote
    assert stale_temp_pid("checkpoint.pth") is None and stale_temp_pid(".hidden.tmp-x") is None


def test_two_processes_writing_the_same_path_do_not_collide(tmp_path):
    path = tmp_path / "result.json"
    script = textwrap.dedent("""
        import sys
        from barlowtwins.runtime.files import atomic_write
        path, mark = sys.argv[1], sys.argv[2]
        block = (mark * 4096).encode()

        def write(tmp):
            with open(tmp, "wb") as f:
                for _ in range(64):  # 256 KiB in many small writes: the other process runs in between
                    f.write(block)

        for _ in range(40):
            atomic_write(path, write)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), mark], stderr=subprocess.PIPE)
             for mark in "ab"]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    data = path.read_bytes()
    assert data in (b"a" * 4096 * 64, b"b" * 4096 * 64)  # one writer's whole file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_atomic({"step": 1}, path)
    with pytest.raises(Exception):
        save_atomic({"step": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pth"], "no temporary file is left behind"


def test_append_line_is_whole_or_nothing(tmp_path, monkeypatch):
    from barlowtwins.runtime import files

    path = tmp_path / "metrics.jsonl"
    files.append_line(path, '{"step": 1}')
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up in the middle of the line
        if len(data) > 4:
            real_write(fd, bytes(data[:4]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(OSError) as e:
        files.append_line(path, '{"step": 2, "loss": 1.0}')
    assert e.value.errno == errno.ENOSPC
    assert path.read_text() == '{"step": 1}\n', "the torn part is cut off again"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_append_line_to_a_full_device_raises_oserror(tmp_path):
    from barlowtwins.runtime.files import append_line

    link = tmp_path / "metrics.jsonl"
    link.symlink_to("/dev/full")
    with pytest.raises(OSError) as e:
        append_line(link, "x")
    assert e.value.errno == errno.ENOSPC


def test_writers_errors_become_oserror_naming_the_path(tmp_path):
    from barlowtwins.runtime.files import WriteError, as_write_error, describe_os_error

    torch_error = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    e = as_write_error(torch_error, tmp_path / "checkpoint.pth")
    assert isinstance(e, WriteError) and e.filename == str(tmp_path / "checkpoint.pth")
    st = type("SafetensorError", (Exception,), {})("Error while serializing: IoError(Os { code: 28, kind: "
                                                  "StorageFull, message: \"No space left on device\" })")
    assert as_write_error(st, tmp_path / "b.safetensors").errno == errno.ENOSPC
    line = describe_os_error(as_write_error(st, tmp_path / "b.safetensors"))
    assert "free disk space" in line and "b.safetensors" in line and "\n" not in line
    assert "255 bytes" in describe_os_error(OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300))


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_torch_zip_writer_failing_mid_file_is_an_oserror_and_keeps_the_old_file(tmp_path):
    """A real failure of torch's zip writer (the file-size limit stands in for a full disk: the same failing write
    in the middle of a file): an OSError naming the path, the old file intact, no temporary file."""
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from barlowtwins.runtime.files import save_atomic
        path = {str(tmp_path / "ck.pth")!r}
        save_atomic({{"w": torch.zeros(10)}}, path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            save_atomic({{"w": torch.zeros(1_000_000)}}, path)
        except OSError as e:
            print("OSError", e.filename == path, e.errno)
        except BaseException as e:
            print("other", type(e).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[:2] == ["OSError", "True"], out.stdout + out.stderr
    assert load_checkpoint(tmp_path / "ck.pth")["w"].shape == (10,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pth"]


def test_every_written_file_gets_the_usual_mode(tmp_path):
    from barlowtwins.runtime.files import FILE_MODE
    from barlowtwins.weights.save import save_safetensors_atomic

    save_safetensors_atomic({"w": torch.zeros(2)}, tmp_path / "b.safetensors")
    write_text_atomic(tmp_path / "a.txt", "x")
    for name in ("b.safetensors", "a.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == FILE_MODE, name
