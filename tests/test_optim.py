"""Schedules and optimizers against torch.optim, and in the population trainer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bpexp.config import schema as config
from bpexp.training.data import make_dataset
from bpexp.training.network import init_weights, stack
from bpexp.training.optim import Optimizer, Schedule, Stepper
from bpexp.training.population import Member, TrainSpec, train_population


def test_gd_is_the_seed_update():
    p = stack([init_weights(3, 5)])
    before = p.clone()
    grads = [torch.full_like(t, 2.0) for t in p.weights()]
    Stepper([Optimizer()], p.weights()).step(p.weights(), grads, torch.tensor([0.1]))
    for now, then in zip(p.weights(), before.weights()):
        assert torch.equal(now, then - 0.1 * 2.0)


@pytest.mark.parametrize("name", ["gd", "momentum", "adam"])
def test_optimizers_match_torch_optim_member_by_member(name):
    """Three members with their own coefficients and lrs, ten steps of made-up gradients."""
    torch.manual_seed(0)
    opts = [Optimizer(name, momentum=mu, beta2=b2, eps=eps) for mu, b2, eps in
            [(0.9, 0.999, 1e-8), (0.5, 0.99, 1e-6), (0.0, 0.9, 1e-3)]]
    lrs = [0.1, 0.01, 0.3]
    p = torch.randn(3, 4, dtype=torch.float64)
    ours = [p.clone()]
    stepper = Stepper(opts, ours)
    refs = [torch.nn.Parameter(p[i].clone()) for i in range(3)]
    torch_opts = [
        torch.optim.SGD([r], lr=lr) if name == "gd" else
        torch.optim.SGD([r], lr=lr, momentum=o.momentum) if name == "momentum" else
        torch.optim.Adam([r], lr=lr, betas=(o.momentum, o.beta2), eps=o.eps)
        for r, o, lr in zip(refs, opts, lrs)]
    for _ in range(10):
        g = torch.randn(3, 4, dtype=torch.float64)
        stepper.step(ours, [g], torch.tensor(lrs, dtype=torch.float64))
        for i, (r, o) in enumerate(zip(refs, torch_opts)):
            r.grad = g[i].clone()
            o.step()
    for i, r in enumerate(refs):
        torch.testing.assert_close(ours[0][i], r.detach(), rtol=1e-12, atol=1e-12)


def torch_schedule_lrs(make, epochs, lr=0.1):
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("schedule, make", [
    (Schedule("step", decay=0.5, decay_every=7), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    (Schedule("exponential", decay=0.5, decay_every=7),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5 ** (1 / 7))),
    (Schedule("cosine", lr_min=0.001), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 30, 0.001)),
    (Schedule(), lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0)),
])
def test_schedules_match_torch_lr_schedulers(schedule, make):
    np.testing.assert_allclose(schedule.factors(0.1, 30), torch_schedule_lrs(make, 30), rtol=1e-9)


def test_ramp_goes_from_lr_to_lr_max():
    f = Schedule("ramp", lr_max=10.0).factors(1e-4, 101)
    assert f[0] == pytest.approx(1e-4) and f[-1] == pytest.approx(10.0) and (np.diff(np.log(f)) > 0).all()


def test_mixed_optimizers_and_schedules_in_one_population_equal_solo_runs():
    """Each member of a mixed population computes bit for bit what it computes alone."""
    data = make_dataset("sin", -5, 5, 20)
    members = [Member(4, "tanh", 0.01, 99), Member(6, "tanh", 0.02, 1, Optimizer("momentum", 0.8)),
               Member(3, "tanh", 0.01, 2, Optimizer("adam")), Member(5, "tanh", 0.05, 3, schedule=Schedule("cosine")),
               Member(4, "sigmoid", 0.1, 4, Optimizer("adam", 0.5), Schedule("step", 0.5, 100))]
    together = train_population(members, data, TrainSpec(400))
    for m, r in zip(members, together):
        alone = train_population([m], data, TrainSpec(400))[0]
        assert (alone.train_loss == r.train_loss).all(), m
        for k in r.final_weights:
            assert torch.equal(alone.final_weights[k], r.final_weights[k])


def test_adam_and_momentum_beat_plain_gd_at_the_seeds_lr():
    """The seed's lr is small for plain GD on 5000 epochs; momentum and Adam go further."""
    data = make_dataset("sin", -5, 5, 20)
    gd, mom, adam = train_population([Member(4, "tanh", 0.01, 99), Member(4, "tanh", 0.01, 99, Optimizer("momentum")),
                                      Member(4, "tanh", 0.01, 99, Optimizer("adam"))], data, TrainSpec(5000))
    assert gd.final_train_loss == pytest.approx(0.008276, abs=2e-6)  # the seed's figure, unchanged
    assert mom.final_train_loss < gd.final_train_loss / 2 and adam.final_train_loss < gd.final_train_loss / 2


def test_schema_choices_are_implemented():
    """config.py names the choices (so checking a config never imports torch); optim.py has them."""
    for name in (s.value for s in config.ScheduleName):  # each starts at lr and never rises
        f = Schedule(name, decay=0.5, decay_every=2).factors(0.1, 5)
        assert f[0] == pytest.approx(0.1) and (np.diff(f) <= 1e-15).all()
        assert (f[1:] < 0.1).any() == (name != "constant")
    p = [torch.ones(2, 3)]
    for name in (o.value for o in config.OptimizerName):
        Stepper([Optimizer(name)] * 2, p).step(p, [torch.ones(2, 3)], torch.full((2,), 0.1))
        assert (p[0] < 1).all()
        p = [torch.ones(2, 3)]
