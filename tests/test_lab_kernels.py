"""The lab's CPU kernel pin: set before torch's first kernel, a user's own value wins, a pin
that comes too late is an error, and the lab verbs pin before they train."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skillgraft.lab.kernels import PINNED

PROBE = ("from skillgraft.lab.kernels import pin_cpu_kernels; settings = pin_cpu_kernels(); import torch; "
         "print(settings['ATEN_CPU_CAPABILITY'], settings['MKL_CBWR'], torch.backends.cpu.get_cpu_capability())")


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                          timeout=120)


def unpinned_capability() -> str:
    done = run("import torch; print(torch.backends.cpu.get_cpu_capability())")
    return done.stdout.strip()


X86_WIDE = ("AVX2", "AVX512")   # where the pin has a path to cap; other CPUs keep their own


def test_the_pin_selects_avx2_kernels_before_torch_runs_and_a_set_value_wins():
    own_path = unpinned_capability()
    pinned = run(PROBE)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.split() == ["avx2", "AVX2", "AVX2" if own_path in X86_WIDE else own_path]
    own = run(PROBE, ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE")
    assert own.stdout.split()[:2] == ["default", "COMPATIBLE"]
    if own_path in X86_WIDE:
        assert own.stdout.split()[2] == "DEFAULT"


def test_a_pin_after_torch_ran_wider_kernels_is_an_error():
    if unpinned_capability() not in X86_WIDE:
        pytest.skip("torch runs no x86 vector path on this CPU: no kernel is wider than the pin")
    late = run("import os, torch; torch.ones(4) + 1; os.environ['ATEN_CPU_CAPABILITY'] = 'default'; "
               "from skillgraft.lab.kernels import pin_cpu_kernels; pin_cpu_kernels()")
    assert late.returncode == 1 and "must run before the first tensor operation" in late.stderr


def test_lab_verbs_pin_the_kernels_before_they_train(run_cli, monkeypatch, tmp_path):
    from skillgraft.lab.knowledge import study

    seen = {}

    def record(*args, **kwargs):
        seen.update({k: os.environ.get(k) for k in PINNED})
        raise KeyboardInterrupt

    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(study, "run_study", record)
    status, _, _ = run_cli("lab", "knowledge", "--fast", "--quiet")
    assert status == 130 and seen == PINNED
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    status, _, _ = run_cli("lab", "demo", "--models", tmp_path)   # pins, then refuses the empty folder
    assert status == 2 and {k: os.environ.get(k) for k in PINNED} == PINNED
    for command in (["lab", "real", "--jobs", "0"], ["sweep", "knowledge-kit", "-o", tmp_path / "f.txt"]):
        (tmp_path / "f.txt").write_text("a file where the kit folder belongs")
        for name in PINNED:
            monkeypatch.delenv(name, raising=False)
        status, _, err = run_cli(*command)   # pins, then refuses the bad option before any work
        assert status == 2 and {k: os.environ.get(k) for k in PINNED} == PINNED, (command, err)
