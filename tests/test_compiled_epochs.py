"""The compiled epoch loop (bpexp/training/compiled_epochs.py) and its sharpness
(compiled_sharpness.py) against the tensor program and autograd: the same training to float32 rounding, and a member still its solo run bit for bit
(tests/test_population.py runs on it: every one-hidden-layer gd member on the CPU uses it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bpexp.training import compiled_epochs, compiled_math, compiled_sharpness
from bpexp.training.data import Dataset, make_dataset
from bpexp.training.network import init_weights
from bpexp.training.optim import Schedule
from bpexp.training.population import Member, TrainSpec, train_population

DATA = make_dataset("sin", -5, 5, 20)


def tensor_program(monkeypatch, members, data, spec):
    with monkeypatch.context() as m:
        m.setattr(compiled_epochs, "covers", lambda *a: False)
        return train_population(members, data, spec)


def test_the_seeds_groups_are_compiled_and_the_rest_are_not():
    assert compiled_epochs.covers("tanh", "gd", 1, "cpu")
    assert not compiled_epochs.covers("tanh", "adam", 1, "cpu")
    assert not compiled_epochs.covers("tanh", "gd", 2, "cpu")
    assert not compiled_epochs.covers("tanh", "gd", 1, "cuda")


def test_threads_split_a_population_and_every_member_is_still_its_solo_run(monkeypatch):
    """The members are split among threads (compiled_epochs.train_in_parts): each trains the
    same bits whether the loop runs its part on 1, 2 or 3 threads, and alone."""
    widths = [1, 2, 4, 5, 8, 13, 3, 6] * 3  # 24 members: parts of 8 at 3 threads
    members = [Member(h, "tanh", lr, seed) for h, lr, seed in zip(widths, np.geomspace(0.01, 0.5, 24), range(24))]
    spec = TrainSpec(400, log_every=7, sharpness_every=-1)
    runs = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(compiled_epochs, "THREADS", threads)
        runs[threads] = train_population(members, DATA, spec)
    assert compiled_epochs.parts(np.array(widths), 3) == [0, 8, 16, 24]  # equal work: 50 a part
    assert compiled_epochs.parts(np.array(widths[:7]), 2) == [0, 7]  # under 2 x MIN_PART members: one part
    solo = train_population([members[13]], DATA, spec)[0]
    same = lambda a, b: np.array_equal(a.train_loss, b.train_loss) and all(  # noqa: E731
        np.array_equal(np.asarray(a.final_weights[k]), np.asarray(b.final_weights[k])) for k in a.final_weights)
    assert all(same(a, b) for threads in (2, 3) for a, b in zip(runs[1], runs[threads]))
    assert same(runs[3][13], solo)
    loop, parts_run = compiled_epochs.train_epochs, []

    def fails_in_a_thread(*args):  # the second part, on a thread of its own: its error is not lost
        parts_run.append(1)
        if len(parts_run) == 2:
            raise ValueError("in a part")
        return loop(*args)

    monkeypatch.setattr(compiled_epochs, "train_epochs", fails_in_a_thread)
    with pytest.raises(ValueError, match="in a part"):
        train_population(members, DATA, spec)


def _loop_arrays(widths, inputs, epochs, act, seed):
    """A population as compiled_epochs.train_epochs takes it: random weights (large enough that
    some members diverge), padded units masked, an lr a member and an epoch (a schedule)."""
    rng = np.random.default_rng(seed)
    k, padded = len(widths), max(widths)
    w1, b1 = rng.normal(0, 0.7, (k, inputs, padded)), rng.normal(0, 0.7, (k, padded))
    wo, bo = rng.normal(0, 0.7, (k, padded)), rng.normal(0, 0.1, k)
    mask = np.zeros((k, padded))
    for i, w in enumerate(widths):
        mask[i, :max(1, w - 1)] = 1  # a padded unit beside the real ones
        w1[i, :, w:], b1[i, w:], wo[i, w:] = 0, 0, 0
    x, x_test = rng.uniform(-5, 5, (20, inputs)), rng.uniform(-5, 5, (7, inputs))
    lr = np.geomspace(0.01, 0.8, k)[:, None] * np.linspace(1, 0.5, epochs)[None]
    test_epoch = np.arange(epochs) % 13 == 0
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return [f32(w1), f32(b1), f32(wo), f32(bo), f32(mask), np.array(widths, dtype=np.int64), f32(x),
            f32(np.sin(x.sum(1))), f32(x_test), f32(np.sin(x_test.sum(1))), f32(lr), 0, epochs, test_epoch, act,
            np.zeros((k, epochs), np.float32), np.zeros((k, int(test_epoch.sum())), np.float32)]


@pytest.mark.parametrize("act", [0, 1, 2])
def test_members_trained_as_the_lanes_of_a_block_are_their_solo_runs_bit_for_bit(act):
    """Blocks of 32, 16 and 8 members of a width train as vector lanes, the rest alone
    (compiled_epochs.train_epochs): each member's curves, test losses and weights, the diverged
    ones' NaNs included, are those of the member trained alone, for 1 and 3 inputs."""
    widths = [4] * 45 + [1] * 9 + [8] * 17 + [16] * 20 + [2] * 3  # 32 + 8 + 5 alone, 8 + 1, 16 + 1, 16 + 4, 3
    for inputs in (1, 3):
        together = _loop_arrays(widths, inputs, 120, act, seed=inputs)
        solo = [[a[i:i + 1] if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == len(widths) else a
                 for a in together] for i in range(len(widths))]
        solo = [[a.copy() if isinstance(a, np.ndarray) else a for a in one] for one in solo]
        compiled_epochs.train_epochs(*together)
        for one in solo:
            compiled_epochs.train_epochs(*one)
        for i, one in enumerate(solo):
            for a, b in zip(together, one):
                if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == len(widths):
                    assert np.array_equal(a[i:i + 1], b, equal_nan=True), (inputs, i)
        assert np.isnan(together[15]).any() and np.isfinite(together[15][:, -1]).any()  # some diverged, some not


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_the_compiled_loop_trains_as_the_tensor_program_does(monkeypatch, activation):
    """Small learning rates (smooth trajectories, where float32 rounding does not grow): the
    curves, test losses and weights agree to 1e-5 relative, every width from 1 to 32 (padded
    widths 1 to 32 in one population), a schedule among them."""
    rng = np.random.default_rng(3)
    members = [Member(w, activation, float(10 ** rng.uniform(-3, -2)), int(rng.integers(1000)),
                      schedule=Schedule("cosine") if w % 3 == 0 else Schedule())
               for w in (1, 2, 3, 5, 8, 13, 21, 32)]
    spec = TrainSpec(400, sharpness_every=100)
    compiled = train_population(members, DATA, spec)
    tensors = tensor_program(monkeypatch, members, DATA, spec)
    for a, b in zip(compiled, tensors):
        assert a.status == b.status == "finished"
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5)
        np.testing.assert_allclose(a.test_loss, b.test_loss, rtol=1e-5)
        np.testing.assert_allclose(a.sharpness, b.sharpness, rtol=1e-3)
        for k in a.final_weights:
            np.testing.assert_allclose(a.final_weights[k], b.final_weights[k], rtol=1e-5, atol=1e-6)


def test_one_compiled_step_is_the_autograd_gradient_step():
    """Two inputs, a padded width, one epoch at lr 0.1: the new weights are w - 0.1 dL/dw with
    dL/dw from autograd on the plain formula (float64), and the loss reported is the loss before
    the step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(15, 2, generator=g)
    y = torch.sin(x[:, 0]) * x[:, 1]
    data = Dataset(x, y, x[:4], y[:4])
    member = Member(5, "tanh", 0.1, 4)
    r = train_population([member], data, TrainSpec(1, sharpness_every=-1))[0]
    w = {k: v.double().requires_grad_() for k, v in init_weights(5, 4, inputs=2).items()}
    out = (w["w2"] @ torch.tanh(w["w1"] @ x.double().T + w["b1"]) + w["b2"])[0]
    loss = ((out - y.double()) ** 2).mean()
    loss.backward()
    assert abs(r.train_loss[0] / loss.item() - 1) < 1e-6
    for k in w:
        expected = (w[k] - 0.1 * w[k].grad).detach()
        np.testing.assert_allclose(r.final_weights[k].double(), expected, rtol=1e-5, atol=1e-6)


def test_a_diverging_member_stops_where_it_diverged_in_both_programs(monkeypatch):
    """lr 1.5 on 16 units blows up within a few epochs: both programs stop it at the epoch
    its loss left the bound, record the loss up to there, and its neighbour trains on."""
    members = [Member(16, "tanh", 1.5, 1), Member(4, "tanh", 0.01, 99)]
    spec = TrainSpec(300, sharpness_every=-1)
    compiled = train_population(members, DATA, spec)
    tensors = tensor_program(monkeypatch, members, DATA, spec)
    assert compiled[0].status == tensors[0].status == "diverged"
    assert compiled[0].stopped_at == tensors[0].stopped_at
    assert compiled[1].status == "finished" and len(compiled[1].train_loss) == 300


def test_the_loops_exp_is_within_one_ulp_of_the_true_exp():
    """compiled_math.exp32 (the loop's own exp, so that the loop vectorises) on a million
    float32 arguments over its whole range, against exp in float64: within 1 ULP where the
    result is a normal float32; 0, inf and NaN where libm's expf gives them."""
    from numba import njit

    @njit(error_model="numpy")
    def exp_all(a, out):
        for i in range(a.size):
            out[i] = compiled_math.exp32(a[i])

    rng = np.random.default_rng(0)
    d = np.concatenate([rng.uniform(-110, 110, 500_000), rng.uniform(-3, 3, 500_000)]).astype(np.float32)
    got = np.empty_like(d)
    exp_all(d, got)
    true = np.exp(d.astype(np.float64))
    normal = (true > np.finfo(np.float32).tiny) & (true < np.finfo(np.float32).max)
    ulp = np.spacing(true[normal].astype(np.float32)).astype(np.float64)
    assert (np.abs(got[normal] - true[normal]) / ulp).max() <= 1.0
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -104.5, 100.5, 89.0], dtype=np.float32)
    got = np.empty_like(special)
    exp_all(special, got)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 0 and got[3] == 1
    assert got[4] == 0 and got[5] == np.inf and got[6] == np.inf


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_the_written_out_hessian_is_autograds(activation):
    """compiled_sharpness.hessians against torch.autograd.functional.hessian of the plain loss
    (float64), for members of 1, 3 and 6 units on two inputs, padded together to 8; and
    sharpness is its top eigenvalue."""
    from bpexp.training.network import ACTIVATIONS, stack

    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 2, generator=g)
    y = torch.cos(x[:, 0]) + x[:, 1]
    units = np.array([1, 3, 6])
    p = stack([init_weights(int(u), int(u) + 10, inputs=2) for u in units])
    args = [t.numpy() for t in (p.ws[0], p.bs[0], p.ws[1], p.bs[1])]
    size = 4 * units.max() + 1
    out = np.zeros((3, size, size))
    code = ACTIVATIONS[activation]
    compiled_sharpness.hessians(*args, units, x.numpy(), y.numpy(), code, out)
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]
    for k, u in enumerate(units):
        def loss(flat):
            w = flat[:2 * u].reshape(2, u)
            b, wo, bo = flat[2 * u:3 * u], flat[3 * u:4 * u], flat[4 * u]
            return ((act(x.double() @ w + b) @ wo + bo - y.double()) ** 2).mean()

        flat = torch.cat([p.ws[0][k, :, :u].reshape(-1), p.bs[0][k, :u], p.ws[1][k, :u], p.bs[1][k:k + 1]]).double()
        expected = torch.autograd.functional.hessian(loss, flat).numpy()
        n = 4 * u + 1
        np.testing.assert_allclose(out[k, :n, :n], expected, rtol=1e-9, atol=1e-12)
        assert not out[k, n:].any() and not out[k, :, n:].any()
    top = compiled_sharpness.sharpness(*args, units, x.numpy(), y.numpy(), code)
    for k, u in enumerate(units):
        n = 4 * u + 1
        assert abs(top[k] / np.linalg.eigvalsh(out[k, :n, :n])[-1] - 1) < 1e-6
