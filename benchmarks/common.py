"""What every benchmark script shares: a description of the machine and appending a table to RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from barlowtwins.runtime.files import write_text_atomic
from barlowtwins.runtime.hardware import usable_cpus

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PREAMBLE = "# Benchmark results\n\nRows are appended by the scripts in this folder.\n"


def machine() -> str:
    """CPU model and usable cores (and the GPU, when there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {usable_cpus()} cores{gpu}"


def append_block(path: str | os.PathLike, header: str, titles: list[str], rows: list[list[str]]) -> str:
    """Append ``## header`` and a Markdown table to ``path`` (created with a preamble); return the block."""
    lines = [f"\n## {header}\n", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    block = "\n".join(lines) + "\n"
    path = Path(path)
    write_text_atomic(path, (path.read_text() if path.exists() else PREAMBLE) + block)
    return block
