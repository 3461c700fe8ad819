"""What a population costs: the epoch time of a grouping (to choose the groups) and the memory
its loss curves need (to refuse, before training, a population that cannot fit)."""
from __future__ import annotations

from typing import Optional, Sequence


# Measured on the 2-core CI machine (benchmarks/population.py): one group costs about
# 90 us of per-operation overhead per epoch, and each padded element [member, point, unit]
# about 2 ns. `plan_groups` minimises their sum.
GROUP_OVERHEAD_S = 90e-6
ELEMENT_COST_S = 2e-9


# Memory per member and epoch, measured with tracemalloc (benchmarks/record_memory.py, 100k
# epochs): a few bytes in training (a float32 loss), ~250 B at the peak of building a run's
# record (curves as float64, the per-epoch CSV text), ~30 B pickled to the recorder.
TRAIN_BYTES_PER_MEMBER_EPOCH = 40  # the loss curves of a population, two batches in flight
RECORD_BYTES_PER_MEMBER_EPOCH = 300  # one run's record being built


def memory_problem(epochs: int, members: int, members_per_run: int) -> Optional[str]:
    """Why a population of `members` (recorded `members_per_run` at a time) cannot keep
    `epochs` epochs of curves in this machine's available memory, or None."""
    need = epochs * (members * TRAIN_BYTES_PER_MEMBER_EPOCH + members_per_run * RECORD_BYTES_PER_MEMBER_EPOCH)
    have = available_memory()
    if have is None or need <= 0.8 * have:
        return None
    return (f"{members} network(s) x {epochs} epochs need about {need / 2**30:.3g} GiB for their loss "
            f"curves; {have / 2**30:.3g} GiB of memory is available")


# Memory per network parameter, in bytes: float32 weights and about 10 working copies of them
# in the training process (gradients, optimizer states, the update's temporaries, the weights
# recorded), measured as the peak RSS of `bpexp train model.hidden=[6000,6000]
# train.epochs=3` (3.6e7 parameters: 1.44 GB above a 10-unit network's peak), and the
# recorder's copy: 12 copies in all.
BYTES_PER_PARAMETER = 4 * 12


def parameters(hidden, n_inputs: int = 1) -> int:
    """Parameters of an MLP with these hidden widths (an int: one layer), one output."""
    widths = [int(hidden)] if isinstance(hidden, (int, float)) else [int(w) for w in hidden]
    sizes = [n_inputs, *widths, 1]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def network_problem(hidden, n_inputs: int, members: int) -> Optional[str]:
    """Why `members` networks of this shape cannot train in this machine's available memory, or None."""
    need = parameters(hidden, n_inputs) * BYTES_PER_PARAMETER * members
    have = available_memory()
    if have is None or need <= 0.8 * have:
        return None
    return (f"{members} network(s) of {parameters(hidden, n_inputs):.3g} parameters need about "
            f"{need / 2**30:.3g} GiB to train; {have / 2**30:.3g} GiB of memory is available")


def available_memory() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else physical memory, else None (unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def plan_groups(widths: Sequence[int], n_points: int) -> list[list[int]]:
    """Split member indices into groups of similar width, minimising the modelled epoch time.

    Dynamic programming over the distinct widths in increasing order: a group covering
    widths (w_i .. w_j] costs its overhead plus count * n_points * w_j element costs.
    """
    distinct = sorted(set(widths))
    count = {w: 0 for w in distinct}
    for w in widths:
        count[w] += 1
    best = [0.0] + [float("inf")] * len(distinct)
    cut = [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        n = 0
        for i in range(j, 0, -1):  # group = distinct[i-1 .. j-1]
            n += count[distinct[i - 1]]
            cost = best[i - 1] + GROUP_OVERHEAD_S + n * n_points * distinct[j - 1] * ELEMENT_COST_S
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    bounds, j = [], len(distinct)
    while j > 0:
        bounds.append((distinct[cut[j]], distinct[j - 1]))
        j = cut[j]
    return [[m for m, w in enumerate(widths) if lo <= w <= hi] for lo, hi in reversed(bounds)]
