"""Shared fixtures: tiny real checkpoints built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skillgraft.lab.kernels import pin_cpu_kernels

# Before anything runs a torch kernel: the lab numbers the tests assert depend on the path.
pin_cpu_kernels()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models: one thread (see one_torch_thread); also what the CLI's thread choice reads
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def model_trio(tmp_path_factory):
    """For each family and dtype: base, skilled and CP checkpoints with different shard layouts."""
    from tiny_models import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("trio")
    cache: dict[tuple[str, str], dict[str, Path]] = {}

    def make(family: str = "llama", dtype: str = "bfloat16") -> dict[str, Path]:
        key = (family, dtype)
        if key not in cache:
            folder = root / f"{family}-{dtype}"
            base = build_tiny_model(folder / "base", family, seed=0, dtype=dtype, shard_size="40KB")
            cache[key] = {
                "base": base,
                "skilled": perturb_model(base, folder / "skilled", seed=1, shard_size="25KB"),
                "skilled2": perturb_model(base, folder / "skilled2", seed=3, scale=0.05),
                "cp": perturb_model(base, folder / "cp", seed=2, shard_size="70KB"),
            }
        return cache[key]

    return make


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    from skillgraft.cli import main

    def call(*args: str | Path) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return call


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run far faster on one thread: with two, each small kernel pays thread
    hand-off costs that dominate (measured ~600 µs vs 8 µs per tiny Linear on a busy
    2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
