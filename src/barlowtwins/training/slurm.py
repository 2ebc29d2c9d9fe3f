"""SLURM helpers: requeue a job that was warned of its time limit (or pre-empted) so that it resumes."""

from __future__ import annotations

import os
import shutil
import subprocess


def requeue_if_slurm() -> bool:
    """``scontrol requeue $SLURM_JOB_ID`` when running under SLURM with scontrol available; True if done.

    Called by rank 0 after the stop checkpoint is on disk; the requeued job runs the same command, which
    finds ``checkpoint.pth`` in the run folder and resumes.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job or shutil.which("scontrol") is None:
        return False
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60, capture_output=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
