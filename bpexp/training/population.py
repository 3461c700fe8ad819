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

from bpexp.training.budget import plan_groups
from bpexp.training.data import Dataset
from bpexp.training.divergence import diverged_mask
from bpexp.training.backprop import gradients
from bpexp.training.network import Params, init_weights, forward, mse, stack, unstack, widths_of
from bpexp.training.optim import Optimizer, Schedule, Stepper, lr_table
from bpexp.training.sharpness import Sharpness


@dataclass(frozen=True)
class TrainSpec:
    """How a population trains, the same for every member (config/specs.py makes it from train.*)."""

    epochs: int
    log_every: int = 0  # epochs between test-loss points; 0: epochs // 100 (log_epochs)
    sharpness_every: int = -1  # epochs between sharpness measurements; 0: automatic, -1: never
    diverge_above: float = 1e4  # the divergence rule's bound (training/divergence.py)
    device: str = "cpu"


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


def log_epochs(epochs: int, log_every: int) -> np.ndarray:
    """Epochs at which test losses (and metric points) are taken: every log_every, and the last.
    Automatic (0): epochs // 100, so a curve has 100 points (101 with the last epoch): one
    every 50 epochs of 5000, ~5 pixels apart in an MLflow chart (which draws up to 320 points a
    curve). 200 points doubled the store (docs/findings.md, "Bytes per trial"): set
    train.log_every for more."""
    every = log_every or max(1, epochs // 100)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))


MIN_SHARPNESS_EVERY = 200


def sharpness_epochs(epochs: int, every: int) -> np.ndarray:
    """Epochs at which sharpness is measured: 0 (the initial network), every `every`, and the
    last; none for every < 0. Automatic (0): every epochs // 10 epochs, at least MIN_SHARPNESS_EVERY
    apart: 11 points in 5000 epochs (0, 500, ..., 4500, 4999), 6 in 1000, the first and the last in under 200. One
    measurement costs about 18 training epochs of the same population (a cold start at epoch
    0 more): benchmarks/sharpness_cost.py, +8 % at 5000 epochs, +23 % at 1000 with 12 points."""
    if every < 0:
        return np.zeros(0, dtype=int)
    every = every or max(MIN_SHARPNESS_EVERY, epochs // 10)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))


def train_population(members: Sequence[Member], data: Dataset, spec: TrainSpec, *, report_every: int = 0,
                     on_report: Optional[ReportHook] = None, chunk: int = 50) -> list[MemberResult]:
    """Train every member for spec.epochs full-batch epochs; return their results, in order.

    Three steps: build the groups (members that can share tensors), train each group on its
    own, collect each member's curves and weights. Every `chunk` epochs a group reads its
    losses back (one device sync), stops its diverged members, asks `on_report` (every
    `report_every` epochs) which to prune, and compacts its tensors to the members left.

    On the CPU this runs on one thread: the recorder process works on the other core, and
    measured on 2 cores, torch's second thread makes these small operations 3-4x slower as
    soon as the other core is busy (and no faster below ~100 members when it is idle).
    """
    threads = torch.get_num_threads()
    if spec.device == "cpu":
        torch.set_num_threads(1)
    try:
        data = data.to(spec.device)
        log = _Log(members, data, spec)
        for group in build_groups(members, data, spec, log):
            train_group(group, data, spec, log, report_every if on_report is not None else 0, on_report, chunk)
        return log.results(members)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Group:
    """Members of one activation, optimizer and depth, trained as one set of padded tensors."""

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


class _Log:
    """What training measures, for every member: its losses, when it stopped and why, its weights."""

    def __init__(self, members: Sequence[Member], data: Dataset, spec: TrainSpec):
        m, epochs = len(members), spec.epochs
        self.test_at = log_epochs(epochs, spec.log_every)
        self.sharp_at = sharpness_epochs(epochs, spec.sharpness_every)
        self.is_test_epoch = np.zeros(epochs, dtype=bool)
        self.is_test_epoch[self.test_at] = True
        self.is_sharp_epoch = np.zeros(epochs, dtype=bool)
        self.is_sharp_epoch[self.sharp_at] = True
        self.train = np.full((m, epochs), np.nan, dtype=np.float32)
        self.test = np.full((m, len(self.test_at)), np.nan, dtype=np.float32)
        self.sharp = np.full((m, len(self.sharp_at)), np.nan, dtype=np.float32)
        self.stopped = np.full(m, -1)  # epoch a member stopped at, -1 while training
        self.status = ["finished"] * m
        inputs = data.x.shape[1] if data.x.dim() == 2 else 1
        self.inits = [init_weights(mb.hidden, mb.seed, inputs) for mb in members]
        self.finals: list[Any] = [None] * m
        self.hidden = [mb.hidden for mb in members]

    def stop(self, i: int, status: str, epoch: int) -> None:
        self.status[i], self.stopped[i] = status, epoch

    def results(self, members: Sequence[Member]) -> list[MemberResult]:
        """Each member's curves up to where it stopped, and its weights."""
        results = []
        for i, mb in enumerate(members):
            end = self.train.shape[1] if self.stopped[i] < 0 else self.stopped[i] + 1
            n_test = int(np.searchsorted(self.test_at, end))
            n_sharp = int(np.searchsorted(self.sharp_at, end))
            results.append(MemberResult(
                member=mb,
                train_loss=self.train[i, :end],
                test_epochs=self.test_at[:n_test],
                test_loss=self.test[i, :n_test],
                init_weights=self.inits[i],
                final_weights=self.finals[i],
                status=self.status[i],
                stopped_at=None if self.stopped[i] < 0 else int(self.stopped[i]),
                sharpness_epochs=self.sharp_at[:n_sharp],
                sharpness=self.sharp[i, :n_sharp],
            ))
        return results


def build_groups(members: Sequence[Member], data: Dataset, spec: TrainSpec, log: _Log) -> list[_Group]:
    """Members of one activation, optimizer and depth, cut by width where plan_groups says."""
    groups = []
    structure = [(mb.activation, mb.optimizer.name, len(widths_of(mb.hidden))) for mb in members]
    for key in sorted(set(structure)):
        idx = [i for i, s in enumerate(structure) if s == key]
        for part in plan_groups([max(widths_of(members[i].hidden)) for i in idx], len(data.x)):
            rows = np.array([idx[j] for j in part])
            p = stack([log.inits[i] for i in rows]).to(spec.device)
            lr = torch.tensor([members[i].lr for i in rows], dtype=torch.float32, device=spec.device)
            table = lr_table([members[i].lr for i in rows], [members[i].schedule for i in rows], spec.epochs,
                             spec.device, torch.float32)
            stepper = Stepper([members[i].optimizer for i in rows], p.weights())
            measure = Sharpness(p) if len(log.sharp_at) else None
            groups.append(_Group(key[0], rows, p, lr, table, stepper, measure))
    return groups


def train_group(g: _Group, data: Dataset, spec: TrainSpec, log: _Log, report_every: int,
                on_report: Optional[ReportHook], chunk: int) -> None:
    """Train one group to its last epoch, or until every member has stopped."""
    epochs = spec.epochs
    pending: list[torch.Tensor] = []
    pending_test: list[torch.Tensor] = []
    start = 0
    for epoch in range(epochs):
        if log.is_test_epoch[epoch]:
            with torch.no_grad():
                pending_test.append(mse(forward(g.p, data.x_test, g.act)[0], data.y_test))
        if log.is_sharp_epoch[epoch]:  # on the weights this epoch's loss is measured on
            col = int(np.searchsorted(log.sharp_at, epoch))
            log.sharp[g.rows, col] = g.sharpness.measure(g.p, data.x, data.y, g.act).cpu().numpy()
        loss, grads = gradients(g.p, data.x, data.y, g.act)
        pending.append(loss)
        g.stepper.step(g.p.weights(), grads, g.lr if g.table is None else g.table[:, epoch])
        last = epoch == epochs - 1
        report = bool(report_every) and (epoch + 1) % report_every == 0
        if not (last or report or (epoch + 1) % chunk == 0):
            continue
        # One device sync per chunk: copy the chunk's losses to the host.
        block = torch.stack(pending, 1).cpu().numpy()  # [K, epochs in chunk]
        log.train[g.rows, start:epoch + 1] = block
        if pending_test:
            cols = np.searchsorted(log.test_at, [e for e in range(start, epoch + 1) if log.is_test_epoch[e]])
            log.test[np.ix_(g.rows, cols)] = torch.stack(pending_test, 1).cpu().numpy()
        pending, pending_test, start = [], [], epoch + 1
        bad = diverged_mask(block, spec.diverge_above)
        keep = ~bad.any(1)
        for r in np.flatnonzero(~keep):
            log.stop(g.rows[r], "diverged", start - block.shape[1] + int(np.argmax(bad[r])))
        if report and keep.any():
            live = g.rows[keep]
            for i in on_report(epoch, live, log.train[live, epoch]):
                keep[np.flatnonzero(g.rows == i)] = False
                log.stop(i, "pruned", epoch)
        if last:
            keep[:] = False
        if not keep.all():  # store the weights of the members leaving, then compact to the rest
            for r in np.flatnonzero(~keep):
                i = g.rows[r]
                log.finals[i] = unstack(g.p, r, log.hidden[i])
            g.compact(keep, spec.device)
        if g.empty:
            return
