"""Pin torch's CPU kernel paths for the lab, so its training takes the same path on any x86 CPU.

torch (ATen), MKL and oneDNN pick their kernels by CPU, and kernels that sum in another
order give, over thousands of steps, another model: `lab knowledge --fast` printed other
extraction rates on an AVX-512 machine (issue 15), and the shipped `lab build` did not
rebuild bit for bit on another machine (docs/lab.md, "Reproducibility"). The variables
below cap all three at AVX2, the path this project's machines take on their own (pinned and
unpinned runs gave the same bits there). ATen reads its variable at its first kernel, so
`pin_cpu_kernels` must run before the first tensor operation (after `import torch` is still
in time, measured). A value already in the environment wins, so other paths can be tried on
purpose.
"""

from __future__ import annotations

import os
import sys

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> dict[str, str]:
    """Set the kernel-path variables (unless already set); returns the values in force.

    Raises RuntimeError when torch already runs wider kernels than asked for (it ran a kernel
    before this call), instead of training on another path silently."""
    for name, value in PINNED.items():
        os.environ.setdefault(name, value)
    settings = {name: os.environ[name] for name in PINNED}
    if "torch" in sys.modules:
        import torch

        asked, used = settings["ATEN_CPU_CAPABILITY"].upper(), torch.backends.cpu.get_cpu_capability()
        if _WIDTH.get(used, 0) > _WIDTH.get(asked, 0):
            raise RuntimeError(f"torch already runs {used} CPU kernels; pin_cpu_kernels() must run before the first "
                               f"tensor operation (ATEN_CPU_CAPABILITY={settings['ATEN_CPU_CAPABILITY']})")
    return settings


_WIDTH = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}   # ATen's x86 paths; a CPU without one falls back
