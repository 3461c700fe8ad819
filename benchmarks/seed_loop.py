"""The seed's training loop, corrected (minus signs restored, b2's gradient cleared).

Kept verbatim in spirit as the baseline the benchmarks time `bpexp` against:
autograd on one network, one Python-level step per epoch.
Usage: python benchmarks/seed_loop.py [--hidden 4] [--lr 0.01] [--epochs 5000] [--seed 99]
"""
import argparse
import time

import torch


def forward(w1, b1, w2, b2, x):
    return w2 @ torch.tanh(w1 @ x + b1) + b2


def loss(y, py):
    return ((y - py) ** 2).mean()


def train(hidden=4, lr=0.01, epochs=5000, seed=99, clear_b2_grad=True):
    """Return the list of per-epoch losses (each taken before that epoch's step) and the final loss."""
    torch.manual_seed(seed)
    x = torch.linspace(-5, 5, 20).reshape(1, 20)
    y = torch.sin(x)
    w1 = torch.randn([hidden, 1], requires_grad=True)
    b1 = torch.randn([hidden, 1], requires_grad=True)
    w2 = torch.randn([1, hidden], requires_grad=True)
    b2 = torch.randn([1, 1], requires_grad=True)
    losses = []
    for _ in range(epochs):
        L = loss(y, forward(w1, b1, w2, b2, x))
        losses.append(L.item())
        L.backward()
        for p in (w1, b1, w2, b2):
            p.data = p.data - p.grad * lr
        for p in (w1, b1, w2) + ((b2,) if clear_b2_grad else ()):
            p.grad.zero_()
    with torch.no_grad():
        final = loss(y, forward(w1, b1, w2, b2, x)).item()
    return losses, final


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--as-published", action="store_true", help="let b2's gradient accumulate, as the post does")
    a = p.parse_args()
    t = time.perf_counter()
    losses, final = train(a.hidden, a.lr, a.epochs, a.seed, clear_b2_grad=not a.as_published)
    print(f"loss at last epoch {losses[-1]:.6f}  after last step {final:.6f}  ({time.perf_counter() - t:.2f} s)")
