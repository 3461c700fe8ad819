"""Train a population of networks together: one batched tensor program instead of K loops.

Members may differ in learning rate, seed, widths, depth, activation, optimizer and schedule.
Members with the same activation, optimizer and depth share one group whose tensors are
padded to the group's widest member (see network.py); `plan_groups` decides where to cut
widths into groups, trading padding waste against the fixed cost of each extra group's
tensor operations. Every member draws its initial weights exactly as a solo run with its
seed does, so a member's result is the same computation as training that config alone
(tests/test_population.py checks 1e-6 agreement).

Every `chunk` epochs the trainer reads the losses back from the device (one sync), marks
members whose loss left the finite range at the first epoch it did, asks the caller's
`on_report` hook which members to prune, and compacts its tensors so stopped members no
longer cost anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from bpexp.data import Dataset
from bpexp.network import Params, gradients, init_weights, forward, mse, stack, unstack, widths_of
from bpexp.optim import Optimizer, Schedule, Stepper, lr_table
from bpexp.outcome import diverged_mask
from bpexp.sharpness import Sharpness

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


@dataclass(frozen=True)
class Member:
    hidden: int | tuple[int, ...]  # one hidden layer's width (the seed's), or each layer's
    activation: str
    lr: float
    seed: int
    optimizer: Optimizer = Optimizer()  # the seed's plain gradient descent
    schedule: Schedule = Schedule()  # the seed's constant lr


@dataclass
class MemberResult:
    member: Member
    train_loss: np.ndarray  # per epoch, before that epoch's step (the seed's printed loss)
    test_epochs: np.ndarray  # epochs at which the test loss was evaluated
    test_loss: np.ndarray
    init_weights: dict
    final_weights: dict
    status: str = "finished"  # finished | diverged | pruned
    stopped_at: Optional[int] = None  # epoch of divergence or pruning
    sharpness_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    sharpness: np.ndarray = field(default_factory=lambda: np.zeros(0))  # lambda_max, before that epoch's step

    @property
    def final_train_loss(self) -> float:
        return float(self.train_loss[-1])

    @property
    def final_test_loss(self) -> float:
        return float(self.test_loss[-1])


# A hook called every `report_every` epochs with (epoch, member indices still training,
# their train losses at that epoch); it returns the indices to prune.
ReportHook = Callable[[int, np.ndarray, np.ndarray], Sequence[int]]


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


def log_epochs(epochs: int, log_every: int) -> np.ndarray:
    """Epochs at which test losses (and metric points) are taken: every log_every, and the last.
    Automatic (0): epochs // 200, so a run has 200 points (201 with the last epoch)."""
    every = log_every or max(1, epochs // 200)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))


MIN_SHARPNESS_EVERY = 200


def sharpness_epochs(epochs: int, every: int) -> np.ndarray:
    """Epochs at which sharpness is measured: 0 (the initial network), every `every`, and the
    last; none for every < 0. Automatic (0): every epochs // 10 epochs, at least MIN_SHARPNESS_EVERY
    apart: 12 points in 5000 epochs, 6 in 1000, the first and the last in under 200. One
    measurement costs about 18 training epochs of the same population (a cold start at epoch
    0 more): benchmarks/sharpness_cost.py, +8 % at 5000 epochs, +23 % at 1000 with 12 points."""
    if every < 0:
        return np.zeros(0, dtype=int)
    every = every or max(MIN_SHARPNESS_EVERY, epochs // 10)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))


def train_population(*args, **kwargs) -> list[MemberResult]:
    """Train every member for `epochs` full-batch gradient-descent epochs; return their results.

    On the CPU this runs on one thread: the recorder process works on the other core, and
    measured on 2 cores, torch's second thread makes these small operations 3-4x slower as
    soon as the other core is busy (and no faster below ~100 members when it is idle).
    """
    if kwargs.get("device", "cpu") != "cpu":
        return _train_population(*args, **kwargs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_population(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _train_population(
    members: Sequence[Member],
    data: Dataset,
    epochs: int,
    *,
    log_every: int = 0,
    diverge_above: float = 1e4,
    device: str = "cpu",
    report_every: int = 0,
    on_report: Optional[ReportHook] = None,
    chunk: int = 50,
    sharpness_every: int = -1,
) -> list[MemberResult]:
    data = data.to(device)
    test_at = log_epochs(epochs, log_every)
    is_test_epoch = np.zeros(epochs, dtype=bool)
    is_test_epoch[test_at] = True
    sharp_at = sharpness_epochs(epochs, sharpness_every)
    is_sharp_epoch = np.zeros(epochs, dtype=bool)
    is_sharp_epoch[sharp_at] = True
    m = len(members)
    train = np.full((m, epochs), np.nan, dtype=np.float32)
    test = np.full((m, len(test_at)), np.nan, dtype=np.float32)
    sharp = np.full((m, len(sharp_at)), np.nan, dtype=np.float32)
    stopped = np.full(m, -1)  # epoch a member stopped at, -1 while training
    status = ["finished"] * m
    inputs = data.x.shape[1] if data.x.dim() == 2 else 1
    inits = [init_weights(mb.hidden, mb.seed, inputs) for mb in members]
    finals: list[Any] = [None] * m

    groups = []
    structure = [(mb.activation, mb.optimizer.name, len(widths_of(mb.hidden))) for mb in members]
    for key in sorted(set(structure)):
        act = key[0]
        idx = [i for i, s in enumerate(structure) if s == key]
        for part in plan_groups([max(widths_of(members[i].hidden)) for i in idx], len(data.x)):
            rows = np.array([idx[j] for j in part])
            p = stack([inits[i] for i in rows]).to(device)
            lr = torch.tensor([members[i].lr for i in rows], dtype=torch.float32, device=device)
            table = lr_table([members[i].lr for i in rows], [members[i].schedule for i in rows], epochs,
                             device, torch.float32)
            stepper = Stepper([members[i].optimizer for i in rows], p.weights())
            measure = Sharpness(p) if len(sharp_at) else None
            groups.append(_Group(act, rows, p, lr, table, stepper, measure))

    def finish(g: "_Group", keep: np.ndarray) -> None:
        """Store the weights of members leaving group g, then compact it to the `keep` rows."""
        for r in np.flatnonzero(~keep):
            i = g.rows[r]
            finals[i] = unstack(g.p, r, members[i].hidden)
        g.compact(keep, device)

    for g in groups:
        pending: list[torch.Tensor] = []
        pending_test: list[torch.Tensor] = []
        start = 0
        for epoch in range(epochs):
            if is_test_epoch[epoch]:
                with torch.no_grad():
                    pending_test.append(mse(forward(g.p, data.x_test, g.act)[0], data.y_test))
            if is_sharp_epoch[epoch]:  # on the weights this epoch's loss is measured on
                col = int(np.searchsorted(sharp_at, epoch))
                sharp[g.rows, col] = g.sharpness.measure(g.p, data.x, data.y, g.act).cpu().numpy()
            loss, grads = gradients(g.p, data.x, data.y, g.act)
            pending.append(loss)
            g.stepper.step(g.p.weights(), grads, g.lr if g.table is None else g.table[:, epoch])
            last = epoch == epochs - 1
            report = on_report is not None and report_every and (epoch + 1) % report_every == 0
            if not (last or report or (epoch + 1) % chunk == 0):
                continue
            # One device sync per chunk: copy the chunk's losses to the host.
            block = torch.stack(pending, 1).cpu().numpy()  # [K, epochs in chunk]
            train[g.rows, start:epoch + 1] = block
            if pending_test:
                cols = np.searchsorted(test_at, [e for e in range(start, epoch + 1) if is_test_epoch[e]])
                test[np.ix_(g.rows, cols)] = torch.stack(pending_test, 1).cpu().numpy()
            pending, pending_test, start = [], [], epoch + 1
            bad = diverged_mask(block, diverge_above)
            keep = ~bad.any(1)
            for r in np.flatnonzero(~keep):
                i = g.rows[r]
                status[i], stopped[i] = "diverged", start - block.shape[1] + int(np.argmax(bad[r]))
            if report and keep.any():
                live = g.rows[keep]
                for i in on_report(epoch, live, train[live, epoch]):
                    keep[np.flatnonzero(g.rows == i)] = False
                    status[i], stopped[i] = "pruned", epoch
            if last:
                keep[:] = False
            if not keep.all():
                finish(g, keep)
            if g.empty:
                break

    results = []
    for i, mb in enumerate(members):
        end = epochs if stopped[i] < 0 else stopped[i] + 1
        n_test = int(np.searchsorted(test_at, end))
        n_sharp = int(np.searchsorted(sharp_at, end))
        results.append(MemberResult(
            member=mb,
            train_loss=train[i, :end],
            test_epochs=test_at[:n_test],
            test_loss=test[i, :n_test],
            init_weights=inits[i],
            final_weights=finals[i],
            status=status[i],
            stopped_at=None if stopped[i] < 0 else int(stopped[i]),
            sharpness_epochs=sharp_at[:n_sharp],
            sharpness=sharp[i, :n_sharp],
        ))
    return results


@dataclass
class _Group:
    act: str
    rows: np.ndarray  # member index of each row
    p: Params
    lr: torch.Tensor  # [K] the base learning rates
    table: Optional[torch.Tensor]  # [K, epochs] scheduled learning rates; None when all constant
    stepper: Stepper
    sharpness: Optional[Sharpness]  # None when sharpness is not measured
    empty: bool = field(default=False)

    def compact(self, keep: np.ndarray, device: str) -> None:
        if not keep.any():
            self.empty = True
            return
        sel = torch.as_tensor(np.flatnonzero(keep), device=device)
        self.rows, self.p, self.lr = self.rows[keep], self.p.select(sel), self.lr[sel]
        self.table = None if self.table is None else self.table[sel]
        self.stepper.select(sel)
        if self.sharpness is not None:
            self.sharpness.select(sel)
