"""The environment report behind `barlowtwins env`: data sets found, missing packages, CUDA devices."""


import torch

from barlowtwins.report.environment import collect, format_text


def test_fashion_mnist_found_through_the_environment_variable(fmnist_dir, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(fmnist_dir))
    info = collect()
    assert info["datasets"]["fashion-mnist"] == str(fmnist_dir)
    assert f"fashion-mnist found in {fmnist_dir}" in format_text(info)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    import barlowtwins.report.environment as E

    real = E._version
    monkeypatch.setattr(E, "_version", lambda m: None if m == "matplotlib" else real(m))
    text = format_text(collect())
    assert "matplotlib   missing (pip install 'barlowtwins[report]')" in text


def test_cuda_devices_are_described(monkeypatch):
    # No GPU here: the CUDA branch runs on torch's answers replaced by those of an A100-like device.
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    props = {0: SimpleNamespace(name="GPU-A", total_memory=80 * 2**30, major=8, minor=0, multi_processor_count=108),
             1: SimpleNamespace(name="GPU-V", total_memory=32 * 2**30, major=7, minor=0, multi_processor_count=80)}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    info = collect()
    assert info["default_device"] == "cuda:0"
    assert [(d["name"], d["compute_capability"], d["bf16"], d["memory_gib"]) for d in info["cuda"]["devices"]] == \
        [("GPU-A", "8.0", True, 80.0), ("GPU-V", "7.0", False, 32.0)]
    text = format_text(info)
    assert "cuda:0 GPU-A, 80.0 GiB, compute capability 8.0, bf16 yes" in text
    assert "cuda:1 GPU-V, 32.0 GiB, compute capability 7.0, bf16 no" in text


def test_the_cpus_native_bf16_and_what_auto_picks_are_shown(monkeypatch):
    import barlowtwins.runtime.hardware as H

    monkeypatch.setenv(H.CPU_BF16_ENV, "1")
    info = collect()
    assert info["cpu"]["bf16"] == "AVX512-BF16 (BARLOWTWINS_CPU_BF16=1)"
    assert "native bf16 AVX512-BF16 (BARLOWTWINS_CPU_BF16=1): --precision auto picks bf16 on the CPU" in \
        format_text(info)
    monkeypatch.setenv(H.CPU_BF16_ENV, "0")
    assert "native bf16 no: --precision auto picks fp32 on the CPU" in format_text(collect())
