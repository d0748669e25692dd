"""CPU defaults chosen, not inherited: how many threads torch uses, and which dtype it computes in.

Threads: torch starts one thread per core whatever else runs; on a 2-core machine beside one
other CPU-bound job a 40-step LoRA run did not finish in 905 s with the default and took 188 s
on one thread (issue 24). `choose_threads` counts the cores other processes are using now
(two samples of /proc/stat) and leaves them alone, unless the user said (`--threads N` or
`OMP_NUM_THREADS`).

Dtype: most published checkpoints are bfloat16, and torch's CPU bfloat16 is fast only where
its kernels use the CPU's bf16 instructions (AMX / AVX512-BF16 through oneDNN); elsewhere a
bf16 matrix product took 5× the float32 time (measured, docs/benchmarks.md). Whether that is
so here is measured, not guessed from CPU flags: `half_is_fast` times one decoder-sized matrix
product in both dtypes, once per process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores other processes keep busy, measured over `seconds` (0.0 when unknown)."""
    first, own = _cpu_times(), _own_cpu_seconds()
    start = time.monotonic()
    time.sleep(seconds)
    second, own_after, elapsed = _cpu_times(), _own_cpu_seconds(), time.monotonic() - start
    if first is None or second is None or second[1] <= first[1]:
        return 0.0
    machine = os.cpu_count() or 1
    share = (second[0] - first[0]) / (second[1] - first[1])  # busy share of all the machine's CPUs
    others = share * machine - (own_after - own) / max(elapsed, 1e-6)
    return max(0.0, others)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, why): `requested` (--threads), else OMP_NUM_THREADS, else the usable cores that
    other processes leave free (at least one)."""
    if requested is not None:
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores, busy = usable_cores(), busy_cores()
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return free, f"{cores} cores, {busy:.1f} busy with other work"


def apply_threads(requested: int | None = None, log: Callable[[str], None] | None = None) -> int:
    """Set torch's thread count by `choose_threads`; a count chosen here is reported (one line
    through `log`)."""
    import torch

    threads, why = choose_threads(requested)
    torch.set_num_threads(threads)
    if log is not None and why not in ("--threads", "OMP_NUM_THREADS"):  # the user's own choice needs no line
        log(f"threads: {threads} ({why}; --threads N to choose)")
    return threads


# What the command line asked for (`--threads`, `--quiet`), applied by `ensure_threads` at the
# first heavy step (a model load), so bad input still fails at once and without a torch import.
_asked: dict = {}


def configure(threads: int | None, log: Callable[[str], None] | None) -> None:
    """Record a verb's `--threads` and where its notes go (None: `--quiet`); nothing runs yet."""
    _asked.clear()
    _asked.update(threads=threads, log=log, applied=False)


def requested() -> int | None:
    """The verb's `--threads`, if given."""
    return _asked.get("threads")


def notes() -> Callable[[str], None] | None:
    """Where CPU choices are reported: the verb's stderr unless --quiet (None outside the CLI)."""
    return _asked.get("log")


def ensure_threads() -> None:
    """Apply the configured thread choice once per verb (no-op for library callers, who own
    torch's settings)."""
    if _asked and not _asked["applied"]:
        _asked["applied"] = True
        apply_threads(_asked["threads"], _asked["log"])


def split_threads(workers: int) -> int:
    """Torch threads for each of `workers` processes sharing the cores `choose_threads` gives
    (at least one each): reported as one line, applied to this process (which then counts as
    configured) and returned for the others."""
    import torch

    free, why = choose_threads(requested())
    threads = max(1, free // workers)
    log = notes()
    if log is not None:
        log(f"threads: {threads} per worker ({why}; --threads N to choose)")
    torch.set_num_threads(threads)
    if _asked:
        _asked["applied"] = True
    return threads


@lru_cache(maxsize=4)
def half_is_fast(dtype_name: str) -> bool:
    """Whether a decoder-sized matrix product in `dtype_name` (bfloat16 / float16) takes no
    longer than in float32 on this CPU with the kernels torch uses now (measured once)."""
    import torch

    def seconds(dtype) -> float:
        x, w = torch.randn(64, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        torch.nn.functional.linear(x, w)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(5):
                torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - start)
        return best

    return seconds(getattr(torch, dtype_name)) <= seconds(torch.float32)


def compute_dtype(stored: str | None, requested: str | None, on_cpu: bool) -> tuple[str | None, str]:
    """(dtype to load and compute in, or None for the checkpoint's own; why). On a CPU, a
    bfloat16/float16 checkpoint computes in float32 unless its half type is fast here or the
    user asked (`requested`)."""
    if requested:
        return requested, "--dtype"
    if not on_cpu or stored not in ("bfloat16", "float16"):
        return None, f"the checkpoint's {stored or 'dtype'}"
    if half_is_fast(stored):
        return None, f"the checkpoint's {stored}, fast on this CPU"
    return "float32", f"checkpoint {stored}; this CPU computes {stored} slower than float32 (--dtype {stored} " \
                      "to keep it)"


def stored_dtype(folder: Path) -> str | None:
    """The dtype a checkpoint folder's config.json declares (`dtype`, formerly `torch_dtype`);
    None when it says nothing or cannot be read."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
