"""A real two-host run: two network namespaces joined by a veth pair (tests/two_hosts.py) stand in for two machines
that share a file system, one torchrun agent in each (``--nnodes 2 --nproc-per-node 1``, c10d rendezvous on
10.231.0.1, gloo on the veth), running the unchanged ``barlowtwins pretrain`` CLI on a small JPEG folder.

* The two-host run ends with the weights of one process on the same global batch (the tolerance of the 2-rank vs
  1-process pretraining test in test_distributed.py, over the same 4 steps: beyond a few steps, float rounding
  grows as it does between two one-process runs with different thread counts).
* Elastic: with ``--max-restarts 1``, one worker killed with SIGKILL after a checkpoint is written: torchrun
  restarts the workers of both hosts, the trainer resumes from its last checkpoint by itself, and the run ends
  bit for bit where the uninterrupted two-host run ends.

Skipped, with the reason, where network namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from two_hosts import HostsUnavailable, two_hosts, unavailable_reason

from barlowtwins.weights.run_files import load_checkpoint

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

RDZV_PORT = 29400  # inside namespaces made for this run only: no other process can hold it
RUN_TIMEOUT = 240  # seconds a run may take before the test gives up (a hang, not a measurement)
ELASTIC_EPOCHS = 3  # 64 images / 16 = 4 steps an epoch: 12 steps, a checkpoint after each
KILL_AFTER_STEP = 3  # the worker dies once a checkpoint of this step (or later) is on disk


@pytest.fixture(scope="module")
def hosts():
    try:
        with two_hosts() as pair:
            yield pair
    except HostsUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory) -> Path:
    """64 JPEGs of 32x32: coloured noise over a class-free gradient, so crops differ and the loss moves."""
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 120, 32, dtype=np.float64)[None, :, None]
    for i in range(64):
        arr = np.clip(rng.integers(0, 120, (32, 32, 3)) + ramp * (i % 3), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:02d}.jpg", quality=90)
    return folder


def pretrain_args(data: Path, out: Path, epochs: int) -> list[str]:
    """The CLI arguments of every run here (after ``-m barlowtwins``): 16 px crops of a width-8 ResNet-18, a
    global batch of 16, a checkpoint at every step.

    The learning rates are a tenth of the CPU recipe's: the gradients of the BN biases are sums that nearly cancel,
    so their float rounding (which differs between 1 and 2 ranks, as between 1 and 2 threads) makes updates that
    differ by a few per cent; at the recipe's rates that grows past the tolerance within 4 steps, at these it
    stays under 3 % of it."""
    return ["pretrain", "--dataset", "images", "--data-dir", str(data), "--backbone", "resnet18", "--width", "8",
            "--stem", "small", "--projector", "32-32", "--image-size", "16", "--batch-size", "16", "--workers", "0",
            "--data-path", "cpu", "--no-progress", "--epochs", str(epochs), "--lr-weights", "0.02", "--lr-biases",
            "0.001", "--seed", "3", "--checkpoint-minutes", "0", "--out", str(out)]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables (a test run under torchrun or SLURM must not leak them
    into the runs it starts), one thread a process, plus ``extra``."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def start_agents(hosts, args: list[str], max_restarts: int, run_id: str) -> list[subprocess.Popen]:
    """One torchrun agent per host, each in its own namespace and session (so that whatever it leaves behind can
    be ended by its process group), gloo bound to that host's veth."""
    agents = []
    for k, host in enumerate(hosts):
        launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                  "--node-rank", str(k), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{hosts[0].addr}:{RDZV_PORT}",
                  "--rdzv-id", run_id, "--local-addr", host.addr, "--max-restarts", str(max_restarts),
                  # the namespaces share the machine's hostname, so torchrun cannot tell which host holds the
                  # rendezvous store by name: say it
                  "--rdzv-conf", f"is_host={int(k == 0)},join_timeout=120", "-m", "barlowtwins", *args]
        # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: torchrun's default hands its workers the rendezvous store the
        # agent keeps across restarts, so a restarted rank can read the previous round's gloo address of a peer
        # and fail to connect ("Connection refused"), leaving the others waiting (seen in 3 of 6 restarts here);
        # with it, each round's workers get a store of their own
        env = clean_env(GLOO_SOCKET_IFNAME=host.ifname, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
        agents.append(subprocess.Popen(host.command(launch), env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True))
    return agents


def finish(agents: list[subprocess.Popen]) -> list[str]:
    """Wait for the agents; their outputs. Whatever is left of them after a failure or a timeout is ended: the
    agents' sessions, and their workers (torchrun starts each in a session of its own)."""
    outputs = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=RUN_TIMEOUT)[0])
    finally:
        for agent in agents:
            end_agent(agent)
    for agent, output in zip(agents, outputs):
        assert agent.returncode == 0, output[-4000:]
    return outputs


def end_agent(agent: subprocess.Popen) -> None:
    """SIGKILL an agent's workers and the agent's session, if any of them is still there; reap the agent."""
    if agent.poll() is None:
        for pid in workers_of(agent):
            _kill(os.kill, pid)
        _kill(os.killpg, agent.pid)
    agent.wait()


def _kill(kill, target: int) -> None:
    try:
        kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def workers_of(agent: subprocess.Popen) -> list[int]:
    """The pids of the worker processes an agent started (its children)."""
    found = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def checkpoint_events(out: Path) -> list[dict]:
    """The checkpoint records of ``out``'s metrics.jsonl so far (a line being written is skipped)."""
    events = []
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") in ("checkpoint", "resume", "start"):
            events.append(record)
    return events


def pretrain_worker(agent: subprocess.Popen) -> int | None:
    """The pid of the pretraining worker an agent started (its child running ``barlowtwins pretrain``), or None."""
    for pid in workers_of(agent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # it just ended
            continue
        if b"barlowtwins" in cmdline and b"pretrain" in cmdline and b"torch.distributed.run" not in cmdline:
            return pid
    return None


def kill_a_worker_after_a_checkpoint(agent: subprocess.Popen, out: Path, total_steps: int) -> tuple[int, int]:
    """SIGKILL ``agent``'s worker as soon as a checkpoint of step `KILL_AFTER_STEP` or later is on disk; returns
    (its pid, the newest checkpoint's step then)."""
    deadline = time.time() + RUN_TIMEOUT
    while time.time() < deadline and agent.poll() is None:
        steps = [e["step"] for e in checkpoint_events(out) if e.get("event") == "checkpoint"]
        worker = pretrain_worker(agent)
        if steps and max(steps) >= KILL_AFTER_STEP and worker is not None:
            os.kill(worker, signal.SIGKILL)
            assert max(steps) < total_steps, "the run ended before its worker could be killed"
            return worker, max(steps)
        time.sleep(0.02)
    pytest.fail(f"no checkpoint of step {KILL_AFTER_STEP} appeared, or the agent exited first")


def assert_state_equal(a: dict, b: dict, what: str) -> None:
    """Every tensor of two nested state dicts bit-identical (torch.equal), and the same keys."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), what
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), what
        for k in a:
            assert_state_equal(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_equal(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


@pytest.fixture(scope="module")
def uninterrupted(hosts, jpeg_dir, tmp_path_factory) -> Path:
    """The elastic test's reference: the same two-host run, not interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    finish(start_agents(hosts, pretrain_args(jpeg_dir, out, ELASTIC_EPOCHS), 0, f"ref{os.getpid()}"))
    return out


def test_two_hosts_end_where_one_process_ends(hosts, jpeg_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "barlowtwins", *pretrain_args(jpeg_dir, one, 1)],
                            env=clean_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert single.returncode == 0, single.stderr[-4000:]
    outputs = finish(start_agents(hosts, pretrain_args(jpeg_dir, two, 1), 0, f"two{os.getpid()}"))
    assert sum(o.count("pretrained 4 steps") for o in outputs) == 1  # said by rank 0 only, on one host
    a, b = load_checkpoint(one / "checkpoint.pth"), load_checkpoint(two / "checkpoint.pth")
    assert a["step"] == b["step"] == 4 and a["world_size"] == 1 and b["world_size"] == 2
    for k, v in a["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_a_killed_worker_is_restarted_and_the_run_resumes_exactly(hosts, jpeg_dir, tmp_path, uninterrupted):
    out = tmp_path / "elastic"
    total = 4 * ELASTIC_EPOCHS
    agents = start_agents(hosts, pretrain_args(jpeg_dir, out, ELASTIC_EPOCHS), 1, f"elastic{os.getpid()}")
    try:
        killed, at_step = kill_a_worker_after_a_checkpoint(agents[1], out, total)
    except BaseException:
        for agent in agents:
            end_agent(agent)
        raise
    outputs = finish(agents)
    assert f"failed (exitcode: -9) local_rank: 0 (pid: {killed})" in outputs[1], outputs[1][-3000:]  # seen, restarted
    assert not any("TORCH_DISABLE_SHARE_RDZV_TCP_STORE" in o for o in outputs)  # no warning: the store is per round
    # the restarted workers resumed from the newest checkpoint: the one the kill followed, or a later one
    resumes = [e for e in checkpoint_events(out) if e.get("event") == "resume"]
    assert len(resumes) == 1 and KILL_AFTER_STEP <= resumes[0]["step"] < total, (resumes, outputs[1][-3000:])
    assert resumes[0]["step"] >= at_step and resumes[0]["world_size"] == 2
    final, reference = load_checkpoint(out / "checkpoint.pth"), load_checkpoint(uninterrupted / "checkpoint.pth")
    assert final["step"] == reference["step"] == total
    assert_state_equal(final["model"], reference["model"], "model")
    assert_state_equal(final["optimizer"], reference["optimizer"], "optimizer")
