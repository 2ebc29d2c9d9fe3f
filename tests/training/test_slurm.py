"""`requeue_if_slurm`: ``scontrol requeue`` of this job (or array task) under SLURM, nothing elsewhere."""

import os

import pytest

from barlowtwins.training.slurm import requeue_if_slurm


@pytest.fixture
def scontrol(tmp_path, monkeypatch):
    """A fake ``scontrol`` first on PATH that logs its arguments; returns the log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexit ${{SCONTROL_EXIT:-0}}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SCONTROL_EXIT"):
        monkeypatch.delenv(name, raising=False)
    return log


def test_a_slurm_job_is_requeued(scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert requeue_if_slurm() is True
    assert scontrol.read_text().split() == ["requeue", "777"]


def test_an_array_task_is_requeued_by_its_array_id(scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "901")  # the task's own job id: not what scontrol requeues
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "900")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue_if_slurm() is True
    assert scontrol.read_text().split() == ["requeue", "900_3"]


def test_outside_slurm_nothing_is_run(scontrol):
    assert requeue_if_slurm() is False
    assert not scontrol.exists()


def test_without_scontrol_on_the_path_it_is_not_requeued(scontrol, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert requeue_if_slurm() is False


def test_a_failing_scontrol_is_reported_as_not_requeued(scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SCONTROL_EXIT", "1")
    assert requeue_if_slurm() is False  # the run still stops cleanly; the caller says it was not requeued
    assert scontrol.read_text().split() == ["requeue", "777"]
