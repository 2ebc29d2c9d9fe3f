"""Data parallelism proven on 2 CPU processes (gloo): the same global batch gives the same loss, gradients and
parameters as one process; a plain all-reduce does not; features are gathered once each; and a 2-process
pretraining run (stopped and resumed) ends where the 1-process run ends."""

import os
import signal
import subprocess
import sys
import time

import dist_workers
import pytest
import torch
from conftest import free_port, spawn

from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.distributed import _first_slurm_host, launcher_env
from barlowtwins.runtime.hardware import select_device
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.trainer import pretrain
from barlowtwins.weights.run_files import load_checkpoint


def test_two_ranks_equal_one_process_loss_gradients_and_lars_steps(tmp_path):
    spawn(dist_workers.gradients_match, str(tmp_path), False)
    for rank in range(2):
        r = torch.load(tmp_path / f"report{rank}.pt")
        dist_loss, ref_loss = r["loss"]
        assert dist_loss == pytest.approx(ref_loss, rel=1e-5)
        assert r["grad_rel_err"] < 1e-4, r
        assert r["c_block_err"] < 1e-5, r  # C[:8, :8] of the global batch on every rank
        assert r["param_rel_err"] < 1e-5, r
        assert r["buffer_rel_err"] < 1e-4, r  # SyncBN running statistics = one process's BN


@pytest.mark.parametrize("crops", [0, 3])
def test_two_ranks_equal_one_process_with_the_mixed_regulariser_and_multicrop(tmp_path, crops):
    """Mixed Barlow Twins (partners drawn in the same blocks), alone and with multi-crop's small crops (global C
    for every crop-view pair, SyncBN over the crops' pass): the terms, gradients, LARS steps and BN statistics of 2
    ranks equal one process on the global batch."""
    spawn(dist_workers.gradients_match, str(tmp_path), False, True, crops)
    for rank in range(2):
        r = torch.load(tmp_path / f"report{rank}.pt")
        for term in ("loss", "mix") + (("crops",) if crops else ()):
            assert r[term][0] == pytest.approx(r[term][1], rel=1e-5) and r[term][0] > 0, term
        assert r["grad_rel_err"] < 1e-4, r
        assert r["param_rel_err"] < 1e-5, r
        assert r["buffer_rel_err"] < 1e-4, r


def test_a_plain_all_reduce_would_fail_the_check(tmp_path):
    spawn(dist_workers.gradients_match, str(tmp_path), True)
    r = torch.load(tmp_path / "report0.pt")
    assert r["loss"][0] == pytest.approx(r["loss"][1], rel=1e-5)  # the forward value is still right...
    assert r["grad_rel_err"] > 0.1  # ...but the gradients are not


def test_distributed_features_are_gathered_by_index(tmp_path):
    spawn(dist_workers.gather_features, str(tmp_path))
    f0, y0 = torch.load(tmp_path / "feats0.pt")
    f1, y1 = torch.load(tmp_path / "feats1.pt")
    from barlowtwins.data.datasets import InMemoryImages
    from barlowtwins.evaluate.features import extract_features

    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (13, 1, 8, 8), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    ref, yref = extract_features(net, InMemoryImages(images, torch.arange(13) % 3), image_size=8,
                                 device=torch.device("cpu"), batch_size=5)
    assert f0.shape == (13, 4)  # 13 samples over 2 ranks: one padded repeat, removed again
    torch.testing.assert_close(f0, ref)
    torch.testing.assert_close(f1, ref)
    assert torch.equal(y0, yref) and torch.equal(y1, yref)


def _tiny(data_dir, out, **kw):
    base = dict(dataset="fashion-mnist", data_dir=str(data_dir), image_size=16, backbone="resnet18", stem="small",
                width=8, projector="32-32", epochs=1, batch_size=16, warmup_epochs=0.5, lr_weights=0.3,
                progress=False, log_every=1, out=str(out), seed=11, checkpoint_minutes=1000)
    base.update(kw)
    return base


def test_two_process_pretraining_resumes_and_matches_one_process(fmnist_dir, tmp_path):
    one = _tiny(fmnist_dir, tmp_path / "one")
    pretrain(PretrainConfig(**one))  # 64 images / 16 = 4 steps
    two = _tiny(fmnist_dir, tmp_path / "two", max_steps=2)
    spawn(dist_workers.pretrain_worker, two)
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pth")["step"] == 2
    two.pop("max_steps")
    spawn(dist_workers.pretrain_worker, two)  # every rank resumes from the same checkpoint
    a = load_checkpoint(tmp_path / "one" / "checkpoint.pth")
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pth")
    assert a["step"] == b["step"] == 4 and b["world_size"] == 2
    for k, v in a["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert (tmp_path / "two" / "backbone.pth").is_file()


def test_launcher_environment(monkeypatch):
    assert launcher_env({}) is None
    assert launcher_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == {"rank": 3, "world_size": 8,
                                                                                "local_rank": 1}
    step = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8",
            "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[014-015]", "SLURM_JOB_NODELIST": "gpu[012-015]",
            "SLURM_JOB_ID": "4242"}
    slurm = launcher_env(step)
    assert slurm["rank"] == 5 and slurm["world_size"] == 8 and slurm["local_rank"] == 1
    assert slurm["master_addr"] in ("gpu014", "gpu[014-015]")  # the step's first node, not the job's
    assert slurm["master_port"] == str(15000 + 4242)
    # a step of 4 tasks in a job of 8 is a world of 4 (srun -n 4 inside sbatch -n 8)
    assert launcher_env({**step, "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"})["world_size"] == 4
    no_step_nodes = {k: v for k, v in step.items() if k != "SLURM_STEP_NODELIST"}
    assert launcher_env(no_step_nodes)["master_addr"] in ("gpu012", "gpu[012-015]")  # the job's list instead
    # two concurrent steps of one job get different ports; srun --resv-ports and MASTER_PORT are used first
    assert launcher_env({**step, "SLURM_STEP_ID": "1"})["master_port"] == str(15000 + 4243)
    assert launcher_env({**step, "SLURM_STEP_RESV_PORTS": "12000-12003"})["master_port"] == "12000"
    assert launcher_env({**step, "SLURM_STEP_RESV_PORTS": "12000-12003", "MASTER_PORT": "29400"})[
        "master_port"] == "29400"
    # torchrun inside an allocation: torchrun's variables win
    assert launcher_env({**step, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})["world_size"] == 2
    assert launcher_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # one task: no process group
    assert launcher_env({**step, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}) is None  # srun -n 1
    monkeypatch.setenv("PATH", "")  # no scontrol: parse the list ourselves
    assert _first_slurm_host("node[3-5,9]") == "node3"
    assert _first_slurm_host("a01,a02") == "a01"


def test_a_batch_scripts_plain_python_is_one_process_with_one_warning(monkeypatch, capsys):
    """``sbatch -n 8`` then a plain ``python`` in the script: SLURM_NTASKS=8 and SLURM_PROCID=0, but no srun step.
    One process, one warning line; inside an srun step, under torchrun, or with one task there is no warning."""
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[012-013]"}
    assert launcher_env(batch) is None
    line = D.slurm_batch_warning(batch)
    assert line == ("warning: SLURM allocated 8 tasks but this process was not started by srun: running as one "
                    "process; launch with srun to use them")
    for env in ({**batch, "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_ID": "0"},
                {**batch, "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "0"},
                {**batch, "RANK": "0", "WORLD_SIZE": "2"}, {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, {}):
        assert D.slurm_batch_warning(env) is None, env
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in batch.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(D, "_warned_slurm_batch", False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda *a, **k: pytest.fail("no process group is started"))
    assert D.init_distributed("cpu") == D.DistInfo() and D.init_distributed("cpu").world_size == 1
    assert capsys.readouterr().err == line + "\n"  # said once, however often asked


def test_cli_in_a_batch_script_runs_as_one_process(fmnist_dir, tmp_path):
    """The whole CLI in a faked ``sbatch -n 8`` shell: it trains as one process (before, it waited 30 minutes for
    7 ranks that never came) and says why, in one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in
           ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(SLURM_PROCID="0", SLURM_NTASKS="8", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost",
               OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "barlowtwins", "pretrain", "--dataset", "fashion-mnist", "--data-dir",
                          str(fmnist_dir), "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem",
                          "small", "--projector", "32-32", "--epochs", "1", "--batch-size", "16", "--max-steps", "1",
                          "--no-progress", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("SLURM allocated 8 tasks but this process was not started by srun") == 1, run.stderr
    assert load_checkpoint(out / "checkpoint.pth")["world_size"] == 1


def test_torchrun_restarts_with_a_shared_store_are_warned_of():
    """torchrun with --max-restarts hands its workers the agent's store, which keeps the previous attempt's
    addresses (tests/runtime/test_two_hosts.py saw restarts hang on them): warned of, with the fix."""
    restarts = {"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_USE_AGENT_STORE": "True",
                "TORCHELASTIC_MAX_RESTARTS": "1"}
    line = D.elastic_store_warning(restarts)
    assert line is not None and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in line and "\n" not in line
    assert D.elastic_store_warning({**restarts, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None  # no restart: no stale data
    assert D.elastic_store_warning({**restarts, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # the fix applied
    assert D.elastic_store_warning({}) is None


@pytest.mark.parametrize("visible, local_rank, index", [(1, 3, 0), (4, 3, 3), (2, 3, 1)])
@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_each_rank_sets_the_cuda_device_select_device_picks(monkeypatch, visible, local_rank, index, launcher):
    """Where SLURM or a container shows each task one GPU, local rank 3 must use device 0 ("invalid device
    ordinal" otherwise); torch.cuda is faked, the process group start is recorded, not made."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("device", i))
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend, **k: calls.setdefault("backend", backend))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
                "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"):
        # init_distributed writes some: set first, so that monkeypatch removes them again after the test even
        # where they were absent (a delenv of an absent key records nothing, and a leaked RANK/WORLD_SIZE makes
        # every later subprocess wait for ranks that never come)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    if launcher == "torchrun":
        env = {"RANK": str(4 + local_rank), "WORLD_SIZE": "8", "LOCAL_RANK": str(local_rank)}
    else:
        env = {"SLURM_PROCID": str(4 + local_rank), "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
               "SLURM_LOCALID": str(local_rank), "SLURM_STEP_NODELIST": "localhost", "MASTER_PORT": "29400"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info = D.init_distributed()
    assert calls == {"device": index, "backend": "nccl"}
    assert info.local_rank == local_rank and info.rank == 4 + local_rank and info.world_size == 8
    assert select_device("auto", info.local_rank) == torch.device("cuda", calls["device"])
    assert select_device("cuda", info.local_rank) == torch.device("cuda", calls["device"])


def test_local_world_size():
    assert D.local_world_size({}) == 1
    assert D.local_world_size({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert D.local_world_size({"SLURM_STEP_TASKS_PER_NODE": "4(x2),2"}) == 4  # this step's first node
    assert D.local_world_size({"SLURM_STEP_TASKS_PER_NODE": "3"}) == 3
    assert D.local_world_size({"LOCAL_WORLD_SIZE": "2", "SLURM_STEP_TASKS_PER_NODE": "8"}) == 2  # torchrun's first
    assert D.local_world_size({"SLURM_TASKS_PER_NODE": "8", "SLURM_NTASKS": "8"}) == 1  # the job's: a batch script
    assert D.local_world_size({"LOCAL_WORLD_SIZE": "0"}) == 1 and D.local_world_size({"LOCAL_WORLD_SIZE": "x"}) == 1


def test_sigusr1_checkpoints_requeues_and_resumes(fmnist_dir, tmp_path):
    """SLURM's warning signal: checkpoint at the next step, ask scontrol to requeue, exit cleanly; rerun resumes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/scontrol.log\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "777"}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "barlowtwins", "pretrain", "--dataset", "fashion-mnist", "--data-dir",
            str(fmnist_dir), "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem", "small",
            "--projector", "32-32", "--epochs", "200", "--batch-size", "16", "--no-progress", "--log-every", "1",
            "--out", str(out)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"loss"') >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr  # the documented graceful-stop status: "run again to resume"
    assert "(signal)" in stdout and "run the same command again to resume" in stdout
    step = load_checkpoint(out / "checkpoint.pth")["step"]
    assert 3 <= step < 800
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "777"]
    resumed = subprocess.run(args + ["--max-steps", str(step + 2)], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "checkpoint.pth")["step"] == step + 2


def test_sync_batchnorm_variance_with_a_large_offset(tmp_path):
    """Inputs at 1000 +- 1: the one-pass E[x^2] - E[x]^2 in float32 was off by ~0.2; the two-pass one matches a
    float64 reference, in the output, the running statistics and the input gradient."""
    spawn(dist_workers.sync_bn_offset, str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x = (1000 + torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-5)
    (y * torch.arange(1.0, 4.0, dtype=torch.float64).view(1, 3, 1, 1)).sum().backward()
    for rank in range(2):
        r = torch.load(tmp_path / f"bn{rank}.pt")
        mine = slice(rank * 4, rank * 4 + 4)
        torch.testing.assert_close(r["y"].double(), y[mine].detach(), rtol=0, atol=2e-3)
        torch.testing.assert_close(r["grad"].double(), x.grad[mine], rtol=0, atol=2e-3)
        unbiased = x.detach().var((0, 2, 3), unbiased=True)
        torch.testing.assert_close(r["running_var"].double(), 0.9 + 0.1 * unbiased, rtol=1e-3, atol=1e-3)


def test_cli_runs_unchanged_under_torchrun(fmnist_dir, tmp_path):
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "barlowtwins"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pre = subprocess.run(launch + ["pretrain", "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir),
                                   "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem", "small",
                                   "--projector", "32-32", "--epochs", "1", "--batch-size", "16", "--no-progress",
                                   "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert pre.stdout.count("pretrained 4 steps") == 1  # printed by rank 0 only
    assert load_checkpoint(out / "checkpoint.pth")["world_size"] == 2
    knn = subprocess.run(launch[:5] + [f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "barlowtwins", "knn",
                                       "--checkpoint", str(out), "--k", "5"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert knn.returncode == 0, knn.stderr[-2000:]
    import json

    rec = json.loads((out / "eval" / "knn-fashion-mnist.json").read_text())
    assert rec["num_test"] == 32 and rec["num_train"] == 64  # every sample once, gathered from 2 ranks
