"""What the benchmarks measure with: wall time with the GPU's queue emptied, and the peak resident memory of a block.

Written once for training/benchmark.py and training/benchmark_streaming.py (README, "Speed").
"""

import ctypes
import resource
import time
from pathlib import Path

import torch


def timed(work, device: torch.device) -> float:
    """Seconds of `work()`, with the GPU's queue emptied before and after."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    synchronize()
    start = time.perf_counter()
    work()
    synchronize()
    return time.perf_counter() - start


class CpuMemory:
    """Peak resident memory of a block minus the resident memory before it, in MiB (`peak_mb`). Linux: VmHWM of
    /proc/self/status, reset at the start; elsewhere ru_maxrss, the process's peak so far."""

    def __enter__(self):
        libc = ctypes.CDLL(None)
        if hasattr(libc, "malloc_trim"):  # glibc
            libc.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.exact = True
        except OSError:
            self.exact = False
        self.before = self._bytes("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mb = max(self._bytes("VmHWM") - self.before, 0) / 2**20

    def _bytes(self, field_name: str) -> int:
        if not self.exact:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        lines = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field_name + ":"))
