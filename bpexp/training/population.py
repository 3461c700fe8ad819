"""Train a population of networks together: one batched tensor program instead of K loops.

Members may differ in learning rate, seed, widths, depth, activation, optimizer and schedule.
Members with the same activation, optimizer and depth share one group whose tensors are
padded to the group's widest member (see network.py); `plan_groups` decides where to cut
widths into groups, trading padding waste against the fixed cost of each extra group's
tensor operations. Every member draws its initial weights exactly as a solo run with its
seed does, so a member's result is the same computation as training that config alone
(tests/test_population.py checks 1e-6 agreement).

On the CPU, groups of the seed's shape (one hidden layer, plain gradient descent) train in
one compiled loop instead (compiled_epochs.py: each member at its own width, so such a group is
never cut by width); the rest, and every group on CUDA, run as the tensor program.

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
from bpexp.training.log_points import log_epochs, sharpness_epochs
from bpexp.training.backprop import gradients
from bpexp.training.network import (ACTIVATIONS, Params, _inputs, init_weights, forward, mse, padded_width, stack,
                                    unstack, widths_of)
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
    units: np.ndarray  # each member's real width (its Hessian's, in a compiled group)
    compiled: bool  # trained by compiled_epochs.py (else by the tensor program)
    empty: bool = field(default=False)

    @property
    def widths(self) -> np.ndarray:
        """Each member's own padded width (network.padded_width): the compiled loop trains no more."""
        return np.array([padded_width(int(u)) for u in self.units], dtype=np.int64)

    def compact(self, keep: np.ndarray, device: str) -> None:
        if not keep.any():
            self.empty = True
            return
        sel = torch.as_tensor(np.flatnonzero(keep), device=device)
        self.rows, self.p, self.lr = self.rows[keep], self.p.select(sel), self.lr[sel]
        self.units = self.units[keep]
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
    # numba is imported when a population is built, not with this module: a command that never
    # trains (a rerun of a finished study, compare) does not wait for it (0.2 s).
    from bpexp.training import compiled_epochs

    groups = []
    structure = [(mb.activation, mb.optimizer.name, len(widths_of(mb.hidden))) for mb in members]
    for key in sorted(set(structure)):
        idx = [i for i, s in enumerate(structure) if s == key]
        # The compiled loop trains each member at its own width: one group, no padding cost.
        compiled = compiled_epochs.covers(key[0], key[1], key[2], spec.device)
        parts = [range(len(idx))] if compiled else plan_groups([max(widths_of(members[i].hidden)) for i in idx],
                                                              len(data.x))
        for part in parts:
            rows = np.array([idx[j] for j in part])
            p = stack([log.inits[i] for i in rows]).to(spec.device)
            lr = torch.tensor([members[i].lr for i in rows], dtype=torch.float32, device=spec.device)
            table = lr_table([members[i].lr for i in rows], [members[i].schedule for i in rows], spec.epochs,
                             spec.device, torch.float32)
            stepper = Stepper([members[i].optimizer for i in rows], p.weights())
            measure = Sharpness(p) if len(log.sharp_at) and not compiled else None
            units = np.array([max(widths_of(members[i].hidden)) for i in rows], dtype=np.int64)
            groups.append(_Group(key[0], rows, p, lr, table, stepper, measure, units, compiled))
    if any(g.compiled for g in groups):
        compiled_epochs.load()
    return groups


def train_group(g: _Group, data: Dataset, spec: TrainSpec, log: _Log, report_every: int,
                on_report: Optional[ReportHook], chunk: int) -> None:
    """Train one group to its last epoch, or until every member has stopped.

    Epochs run in chunks: after each (every `chunk` epochs, at every report, at the last) the
    chunk's losses are read back (one device sync), diverged members stop, `on_report` may
    prune, and the group compacts to the members left. Inside a chunk the epochs run in the
    compiled loop (compiled_epochs.py) or as the tensor program, stopping where sharpness is
    measured (on the weights that epoch's loss is measured on, before its step).
    """
    epochs, start = spec.epochs, 0
    while start < epochs:
        end = start + 1
        while not (end == epochs or end % chunk == 0 or (report_every and end % report_every == 0)):
            end += 1
        stops = [e for e in log.sharp_at if start < e < end] + [end]
        first = start
        for stop in stops:
            if log.is_sharp_epoch[first]:
                log.sharp[g.rows, int(np.searchsorted(log.sharp_at, first))] = _sharpness(g, data)
            (_compiled_epochs if g.compiled else _tensor_epochs)(g, data, log, first, stop)
            first = stop
        if _end_of_chunk(g, spec, log, start, end, bool(report_every) and end % report_every == 0, on_report):
            return
        start = end


def _sharpness(g: _Group, data: Dataset) -> np.ndarray:
    """lambda_max of each member's loss Hessian now: exactly, from the Hessian written out
    (compiled_sharpness.py), in a compiled group; by Krylov iteration (sharpness.py) in the
    tensor program's."""
    if g.compiled:
        from bpexp.training import compiled_sharpness  # numba: imported by build_groups already

        return compiled_sharpness.sharpness(*_weight_arrays(g), g.units, _array(_inputs(data.x)), _array(data.y),
                                            ACTIVATIONS[g.act])
    return g.sharpness.measure(g.p, data.x, data.y, g.act).cpu().numpy()


def _tensor_epochs(g: _Group, data: Dataset, log: _Log, first: int, stop: int) -> None:
    """Epochs first .. stop-1 as the tensor program (network.py, backprop.py, optim.py); the
    losses are read back once, at the end."""
    pending, pending_test = [], []
    for epoch in range(first, stop):
        if log.is_test_epoch[epoch]:
            with torch.no_grad():
                pending_test.append(mse(forward(g.p, data.x_test, g.act)[0], data.y_test))
        loss, grads = gradients(g.p, data.x, data.y, g.act)
        pending.append(loss)
        g.stepper.step(g.p.weights(), grads, g.lr if g.table is None else g.table[:, epoch])
    log.train[g.rows, first:stop] = torch.stack(pending, 1).cpu().numpy()
    if pending_test:
        log.test[np.ix_(g.rows, _test_columns(log, first, stop))] = torch.stack(pending_test, 1).cpu().numpy()


def _compiled_epochs(g: _Group, data: Dataset, log: _Log, first: int, stop: int) -> None:
    """Epochs first .. stop-1 in the compiled loop, on the group's own tensors (numpy views)."""
    from bpexp.training import compiled_epochs  # imported by build_groups already

    cols = _test_columns(log, first, stop)
    train = np.empty((len(g.rows), stop - first), dtype=np.float32)
    test = np.empty((len(g.rows), len(cols)), dtype=np.float32)
    lr = (g.lr.unsqueeze(1) if g.table is None else g.table).numpy()
    compiled_epochs.train_in_parts((*_weight_arrays(g), g.p.masks[0].numpy(), g.widths),
                                   (_array(_inputs(data.x)), _array(data.y), _array(_inputs(data.x_test)),
                                    _array(data.y_test)), lr, first, stop, log.is_test_epoch, ACTIVATIONS[g.act],
                                   train, test)
    log.train[g.rows, first:stop] = train
    if len(cols):
        log.test[np.ix_(g.rows, cols)] = test


def _weight_arrays(g: _Group) -> tuple[np.ndarray, ...]:
    """w1, b1, wo, bo of a one-hidden-layer group as numpy views of its tensors (the compiled
    loops write the weights through them)."""
    return g.p.ws[0].numpy(), g.p.bs[0].numpy(), g.p.ws[1].numpy(), g.p.bs[1].numpy()


def _array(t: torch.Tensor) -> np.ndarray:
    """A tensor as the C-ordered array the compiled loop was built for (another layout would
    build it again, ~5 s)."""
    return np.ascontiguousarray(t.numpy())


def _test_columns(log: _Log, first: int, stop: int) -> np.ndarray:
    return np.arange(np.searchsorted(log.test_at, first), np.searchsorted(log.test_at, stop))


def _end_of_chunk(g: _Group, spec: TrainSpec, log: _Log, start: int, end: int, report: bool,
                  on_report: Optional[ReportHook]) -> bool:
    """Stop the chunk's diverged members (at the epoch each diverged), ask `on_report` which to
    prune, store the weights of the members leaving and compact to the rest. True when none is
    left."""
    block = log.train[g.rows, start:end]
    bad = diverged_mask(block, spec.diverge_above)
    keep = ~bad.any(1)
    for r in np.flatnonzero(~keep):
        log.stop(g.rows[r], "diverged", start + int(np.argmax(bad[r])))
    if report and keep.any():
        live = g.rows[keep]
        for i in on_report(end - 1, live, log.train[live, end - 1]):
            keep[np.flatnonzero(g.rows == i)] = False
            log.stop(i, "pruned", end - 1)
    if end == spec.epochs:
        keep[:] = False
    if not keep.all():
        for r in np.flatnonzero(~keep):
            i = g.rows[r]
            log.finals[i] = unstack(g.p, r, log.hidden[i])
        g.compact(keep, spec.device)
    return g.empty
