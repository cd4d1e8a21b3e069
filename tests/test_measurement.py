"""glat_hf.measurement: the benchmarks' clock and memory meter."""

import time

import torch

from glat_hf.measurement import CpuMemory, timed


def test_cpu_memory_sees_a_large_temporary_tensor():
    memory = CpuMemory()
    for _ in range(3):  # from the second time glibc serves the block from its heap, where malloc_trim lets it count
        with memory:
            block = torch.ones(16 * 2**20 // 4)  # 16 MiB, written
            del block
        assert memory.peak_mb >= 15
    small = [torch.ones(2**20 // 4) for _ in range(40)]  # 40 x 1 MiB, freed into the heap
    del small
    with memory:
        pass
    assert memory.peak_mb < 20


def test_timed_counts_the_work():
    assert 0.05 <= timed(lambda: time.sleep(0.05), torch.device("cpu")) < 1.0
