"""The training checkpoints of a run folder: the last K kept, each with a checksum, written atomically.

``<out>/checkpoint.pth`` is the newest; ``checkpoint.1.pth`` ... ``checkpoint.<K-1>.pth`` are older ones.
Each has a ``<name>.sha256`` beside it (the hex digest, computed while writing). At resume the newest checkpoint
that matches its checksum and reads as a training checkpoint is used; a corrupt or truncated newer one is
reported and skipped.

Writing never endangers what is on disk: the new file is written (and fsynced) under a temporary name first,
so a full disk or a kill mid-write leaves every earlier checkpoint as it was; only then are the older files
shifted and the new one renamed into place. Temporary files left behind by killed processes are removed when a
run starts (`remove_stale_temps`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from barlowtwins.errors import CheckpointError, field_error
from barlowtwins.runtime.files import file_sha256, save_atomic, stale_temp_pid, write_text_atomic
from barlowtwins.weights.run_files import CHECKPOINT_NAME, FORMAT, load_checkpoint


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of `atomic_write` whose writing process is gone; return what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        pid = stale_temp_pid(p.name)
        if pid is not None and p.is_file() and not _alive(pid):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def check_training_checkpoint(ckpt: dict, path: Path) -> None:
    """Raise a one-line `CheckpointError` unless ``ckpt`` has what a resume needs."""
    if ckpt.get("format") != FORMAT or not isinstance(ckpt.get("model"), dict) \
            or not isinstance(ckpt.get("optimizer"), dict):
        raise field_error(lambda n: f"{path} is not a barlowtwins training checkpoint; choose a new {n('out')}",
                          CheckpointError)
    step = ckpt.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path} has no valid step count (found {step!r}); it is damaged")
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path} has no valid config (found {type(ckpt.get('config')).__name__}); "
                              "it is damaged")


class CheckpointStore:
    """The last ``keep`` training checkpoints of ``folder``."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2, name: str = CHECKPOINT_NAME):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.folder, self.keep, self.name = Path(folder), keep, name

    @property
    def latest(self) -> Path:
        return self.folder / self.name

    def path(self, i: int) -> Path:
        """The i-th newest checkpoint (0: ``checkpoint.pth``, 1: ``checkpoint.1.pth``, ...)."""
        if i == 0:
            return self.latest
        stem, dot, ext = self.name.rpartition(".")
        return self.folder / f"{stem}.{i}.{ext}" if dot else self.folder / f"{self.name}.{i}"

    @staticmethod
    def checksum_path(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    def existing(self) -> list[Path]:
        """Checkpoint files present, newest first (also older ones beyond ``keep``, from an earlier setting)."""
        out, i = [], 0
        while i <= max(self.keep, 8):
            if self.path(i).is_file():
                out.append(self.path(i))
            i += 1
        return out

    # ---- writing -----------------------------------------------------------------------------------
    def save(self, state: dict) -> Path:
        """Write ``state`` as the newest checkpoint, keep the ``keep - 1`` before it, drop older ones."""
        try:
            # the older files shift only once the new one is fsynced under its temporary name
            digest = save_atomic(state, self.latest, before_replace=self._shift)
            write_text_atomic(self.checksum_path(self.latest), digest + "\n")
        except OSError as e:
            raise CheckpointError(self._write_failure(e)) from None
        return self.latest

    def _shift(self) -> None:
        """checkpoint.pth -> .1 -> .2 ... (with their checksums); the newest one's checksum is removed, as it
        must not describe the file about to be renamed in."""
        for i in range(self.keep - 1, 0, -1):
            for src, dst in ((self.path(i - 1), self.path(i)),
                             (self.checksum_path(self.path(i - 1)), self.checksum_path(self.path(i)))):
                if src.exists():
                    os.replace(src, dst)
                elif dst.exists() and src.suffix == ".sha256":
                    dst.unlink()  # an older checksum must not describe the file shifted in
        self.checksum_path(self.latest).unlink(missing_ok=True)

    def _write_failure(self, e: OSError) -> str:
        good = next((p for p in self.existing()), None)
        kept = f"the previous checkpoint {good} is intact" if good else "no earlier checkpoint exists"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"disk full while writing a checkpoint in {self.folder}; {kept}; free space and run again to resume"
        return f"cannot write a checkpoint in {self.folder} ({e.strerror or e}); {kept}"

    # ---- reading -----------------------------------------------------------------------------------
    def _known_digests(self) -> set[str]:
        """Every digest recorded beside any checkpoint of the folder.

        Rotation moves each file and then its checksum, so a kill between the two renames leaves a file beside
        the checksum of its neighbour, while its own digest is still on disk under its previous name. A file is
        intact when its digest is any recorded one: corruption or truncation matches none of them."""
        digests = set()
        for i in range(max(self.keep, 8) + 1):
            sidecar = self.checksum_path(self.path(i))
            try:
                digests.add(sidecar.read_text(errors="replace")[:200].strip())
            except OSError:
                continue
        return digests

    def verify(self, path: Path) -> dict:
        """Load ``path`` after checking its checksum; a one-line `CheckpointError` names what is wrong."""
        sidecar = self.checksum_path(path)
        if sidecar.is_file() and file_sha256(path) not in self._known_digests():
            raise CheckpointError(f"{path} does not match its checksum (truncated or corrupted)")
        ckpt = load_checkpoint(path)
        check_training_checkpoint(ckpt, path)
        return ckpt

    def load_latest(self) -> tuple[dict, Path, list[str]] | None:
        """(checkpoint, its path, problems with newer files) for the newest good checkpoint; None when the folder
        has none. Raises `CheckpointError` (about the newest) when checkpoints exist but none is usable."""
        problems: list[str] = []
        first_error: CheckpointError | None = None
        for path in self.existing():
            try:
                return self.verify(path), path, problems
            except CheckpointError as e:
                first_error = first_error or e
                problems.append(str(e))
        if first_error is not None:
            raise first_error
        return None
