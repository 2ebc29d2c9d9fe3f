"""One writer per run folder: a second holder is refused with one line naming the first; a lock never outlives
its process (kill -9 included), and a record left by a killed holder is reported and taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from barlowtwins.errors import ConfigError
from barlowtwins.runtime.lock import LOCK_NAME, FolderLock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with FolderLock(tmp_path / "run") as first:
        assert first.stale is None
        with pytest.raises(ConfigError, match=rf"in use by pid {os.getpid()} on .*choose another --out") as e:
            FolderLock(tmp_path / "run").acquire()
        assert "\n" not in str(e.value)
    # released: the next holder takes it and finds a clean (empty) record
    with FolderLock(tmp_path / "run") as again:
        assert again.stale is None
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""


def test_a_lock_held_by_another_process_and_released_by_its_kill(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from barlowtwins.runtime.lock import FolderLock
        FolderLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel dropped the lock with the process; its record stays and is named as stale
    lock = FolderLock(tmp_path).acquire()
    try:
        assert lock.stale is not None and lock.stale["pid"] == holder.pid
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_forked_children_do_not_keep_a_released_lock(tmp_path):
    """Data-loader workers are forked while the lock is held; releasing it must free the folder even while they
    live."""
    lock = FolderLock(tmp_path).acquire()
    pid = os.fork()
    if pid == 0:  # the child just waits, holding a copy of the descriptor
        import time
        time.sleep(3)
        os._exit(0)
    try:
        lock.release()
        FolderLock(tmp_path).acquire().release()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
