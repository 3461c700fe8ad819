"""The hand-written BP against torch autograd (micrograd-style), and the seed's numbers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bpexp.training.data import FUNCTIONS, make_dataset
from bpexp.training.backprop import column_layout, gradients
from bpexp.training.network import ACTIVATIONS, Params, init_weights, stack, unstack
from bpexp.training.population import Member, TrainSpec, train_population
from bpexp.config import schema as config

AUTOGRAD_ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def autograd_grads(w: dict, x, y, activation: str):
    """The plain formula, out = w_o @ act(... act(w1 @ x + b1) ...) + b_o, differentiated by autograd."""
    w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    layers = len(w) // 2
    h = x.reshape(x.shape[0], -1).T  # [D, N]
    for n in range(1, layers):
        h = AUTOGRAD_ACT[activation](w[f"w{n}"] @ h + w[f"b{n}"])
    out = w[f"w{layers}"] @ h + w[f"b{layers}"]
    loss = ((y.reshape(1, -1) - out) ** 2).mean()
    loss.backward()
    return loss.detach(), {k: v.grad for k, v in w.items()}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("depth, inputs", [(1, 1), (1, 3), (2, 1), (3, 2)])
@pytest.mark.parametrize("trial", range(3))
def test_gradients_match_autograd(activation, depth, inputs, trial):
    """Random networks of random widths, padded into one population, on random data."""
    g = torch.Generator().manual_seed(trial)
    shapes = [tuple(int(w) for w in torch.randint(1, 9, (depth,), generator=g)) for _ in range(4)]
    n = int(torch.randint(3, 30, (1,), generator=g))
    x = torch.randn(n, inputs, generator=g, dtype=torch.float64) * 2
    if inputs == 1:
        x = x[:, 0]  # the seed's one input, given as [N]
    y = torch.randn(n, generator=g, dtype=torch.float64)
    nets = [{k: v.double() * 0.8 for k, v in init_weights(s, 1000 * trial + i, inputs).items()}
            for i, s in enumerate(shapes)]
    p = stack(nets, widths=[16] * depth)  # every member padded
    loss, grads = gradients(p, x, y, activation)
    assert [t.shape for t in grads] == [t.shape for t in p.weights()]
    names = [f"{kind}{n}" for n in range(1, depth + 2) for kind in ("w", "b")]
    for i, (shape, net) in enumerate(zip(shapes, nets)):
        ref_loss, ref = autograd_grads(net, x, y, activation)
        assert rel_err(loss[i], ref_loss) < 1e-6
        # the gradients of member i, unpadded, in the seed's shapes
        got = unstack(Params(grads[0::2], grads[1::2], p.masks), i, shape)
        for name in names:
            assert rel_err(got[name], ref[name]) < 1e-6, name
        # padding gets no gradient at all, so it stays exactly zero
        full = unstack(Params(grads[0::2], grads[1::2], p.masks), i, [16] * depth)
        for name in names:
            padded = full[name].clone()
            padded[tuple(slice(0, s) for s in got[name].shape)] = 0
            assert not padded.any(), name


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("depth, inputs", [(1, 1), (2, 3)])
def test_the_compiled_passes_are_the_python_ones_bit_for_bit(activation, depth, inputs):
    """network.compiled (TorchScript) runs the same operations: the same bits, forward and back;
    float32 (the trainer's dtype), members of several widths, padded."""
    from bpexp.training import backprop, network, optim

    assert isinstance(backprop._backprop_compiled, torch.jit.ScriptFunction)  # compiled here, not the fallback
    g = torch.Generator().manual_seed(depth * 10 + inputs)
    x, y = torch.randn(20, inputs, generator=g) * 3, torch.randn(20, generator=g)
    p = stack([init_weights([w] * depth, 7 + w, inputs) for w in (1, 3, 6)])
    c = [*network._activation_constants(x), network.const(2.0 / 20, x), network.const(20.0, x)]
    act = ACTIVATIONS[activation]
    layout = column_layout(inputs, tuple(w.shape[2] for w in p.ws[:-1]))
    loss, grads = backprop._backprop_compiled(p.ws, p.bs, p.masks, x, y, act, c, *layout)
    ref_loss, ref_grads = backprop._backprop(p.ws, p.bs, p.masks, x, y, act, c, *layout)
    assert torch.equal(loss, ref_loss) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    out, hs = network._forward_compiled(p.ws, p.bs, x, act, c[:3])
    ref_out, ref_hs = network._forward(p.ws, p.bs, x, act, c[:3])
    assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(hs, ref_hs))
    lr = torch.tensor([0.1, 0.2, 0.3])
    stepped, ref = [t.clone() for t in p.weights()], [t.clone() for t in p.weights()]
    optim._gd_step(stepped, grads, lr)
    optim._gd(ref, grads, lr)
    assert all(torch.equal(a, b) for a, b in zip(stepped, ref))


def test_the_column_layout_gives_every_term_its_own_columns():
    """column_layout: the per-point terms of every gradient and the loss tile the block, no overlap."""
    for inputs, widths in [(1, (4,)), (3, (8, 2)), (2, (1, 16, 4))]:
        dw_at, dz_at, n_cols = column_layout(inputs, widths)
        fan_in, top = (inputs, *widths[:-1]), widths[-1]
        spans = [(0, top), (n_cols - 2, 1), (n_cols - 1, 1)]
        spans += [(dw_at[i], fan_in[i] * widths[i]) for i in range(len(widths))]
        spans += [(dz_at[i], widths[i]) for i in range(len(widths))]
        covered = sorted(c for start, size in spans for c in range(start, start + size))
        assert covered == list(range(n_cols)), (inputs, widths)


def test_float32_gradients_match_autograd_float32():
    d = make_dataset("sin", -5, 5, 20)
    net = init_weights(4, 99)
    loss, grads = gradients(stack([net]), d.x, d.y, "tanh")
    ref_loss, ref = autograd_grads(net, d.x, d.y, "tanh")
    assert rel_err(loss[0], ref_loss) < 1e-6
    for got, key in zip(grads[:3], ("w1", "b1", "w2")):
        assert rel_err(got[0].flatten(), ref[key].flatten()) < 1e-5  # float32 rounding of two formulas


def test_init_draws_like_the_seed():
    torch.manual_seed(99)
    seed_order = [torch.randn(4, 1), torch.randn(4, 1), torch.randn(1, 4), torch.randn(1, 1)]
    ours = init_weights(4, 99)
    for a, key in zip(seed_order, ("w1", "b1", "w2", "b2")):
        assert torch.equal(a, ours[key])


def _seed_loop():
    path = Path(__file__).parents[1] / "benchmarks" / "seed_loop.py"
    spec = importlib.util.spec_from_file_location("seed_loop", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduces_the_seed():
    """Defaults = the blog post's network, whose corrected final training MSE is 0.008276."""
    d = make_dataset("sin", -5, 5, 20)
    r = train_population([Member(4, "tanh", 0.01, 99)], d, TrainSpec(5000))[0]
    assert r.status == "finished" and len(r.train_loss) == 5000
    assert abs(r.final_train_loss / 0.008276 - 1) < 1e-4
    seed_losses, _ = _seed_loop().train(epochs=5000)
    assert abs(r.final_train_loss / seed_losses[-1] - 1) < 1e-4
    # the whole curve follows the seed's autograd loop, not only its end
    assert max(abs(a / b - 1) for a, b in zip(r.train_loss[::250], seed_losses[::250])) < 1e-4


def test_rerun_is_bitwise_identical():
    d = make_dataset("sin", -5, 5, 20, noise=0.1, noise_seed=3)
    members = [Member(h, "tanh", lr, s) for h, lr, s in [(4, 0.01, 99), (9, 0.05, 1), (2, 0.2, 7)]]
    a = train_population(members, d, TrainSpec(800))
    b = train_population(members, d, TrainSpec(800))
    for ra, rb in zip(a, b):
        assert (ra.train_loss == rb.train_loss).all()
        for k in ra.final_weights:
            assert torch.equal(ra.final_weights[k], rb.final_weights[k])


def test_schema_choices_are_implemented():
    assert tuple(ACTIVATIONS) == tuple(a.value for a in config.Activation)
    assert tuple(FUNCTIONS) == tuple(f.value for f in config.Function)

