"""Sharpness: the largest eigenvalue lambda_max of the training loss's Hessian, for every member
of a population at once.

Why it matters: near a minimum, full-batch gradient descent on the loss L behaves like
w <- w - lr H w on the quadratic 1/2 w^T H w, which shrinks the component along an
eigenvector of H by (1 - lr lambda) per step. It stays bounded only while
|1 - lr lambda| <= 1 for every eigenvalue, i.e. lr < 2 / lambda_max. So `2 / sharpness` is the
largest stable learning rate where the network is now. During training sharpness tends to
rise until it reaches 2 / lr and then hovers there (progressive sharpening and the "edge of
stability", Cohen et al., ICLR 2021).

How: Krylov iteration on Hessian-vector products. H v is the gradient of (grad L . v), one
double backward pass, never the Hessian itself. The population's loss is the sum of its
members' losses, whose weights do not mix, so the Hessian of that sum is block diagonal: one
product gives every member's H_k v_k at once.

Plain power iteration, v <- H v / |H v|, was the first try. Measured on the default study's
population (300 members, widths 1-32, tanh), from a random start it needed more than 100
products for some members at init (their top two eigenvalues are close) and then a second
round on H - mu I wherever the largest-magnitude eigenvalue was negative (it often is at
init, with large residuals): 1.1 s per measurement against 7 ms per training epoch.
Lanczos builds the same Krylov space {v, Hv, H^2 v, ...} from the same products but reads
the eigenvalues off the small tridiagonal matrix it builds, both ends at once, so lambda_max
comes out directly even when a negative eigenvalue dominates, and converges in far fewer
products (a few dozen from a random start; at most the number of weights, where the Krylov
space is the whole space and the answer exact). The vectors are re-orthogonalised at every
step (twice; they are short), the textbook remedy for Lanczos's loss of orthogonality.
Each measurement starts from the member's previous top eigenvector: sharpness moves slowly
between measurements, so a warm start needs a handful of products.

A padded unit (network.py) has zero weights, but the Hessian couples its incoming and
outgoing weights (d2L/dw_in dw_out = g act'(0) x != 0). The vectors are kept at zero on
padding, so the iteration sees exactly the real network's Hessian.

A group that trains in the compiled loop (one hidden layer, gd, on the CPU) is measured there
instead, exactly: compiled_sharpness.py writes its small Hessian out and LAPACK takes the top
eigenvalue (docs/findings.md, "The sequential start near the compute limit").

The loss here is the plain formula with autograd (matmul, torch.tanh): the hand-written
backward of network.py is for training; this is a measurement, checked against the
eigenvalues of torch.autograd.functional.hessian (tests/test_sharpness.py).
"""
from __future__ import annotations

import torch

from bpexp.training.network import Params, _inputs

_ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def loss(ws: list[torch.Tensor], bs: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
         activation: str) -> torch.Tensor:
    """Per-member MSE [K] of padded weights (network.Params layout), differentiable twice."""
    act = _ACT[activation]
    h = _inputs(x).unsqueeze(0)  # [1, N, D]
    for w, b in zip(ws[:-1], bs[:-1]):
        h = act(torch.matmul(h, w) + b.unsqueeze(1))  # [K, N, H]
    out = (h * ws[-1].unsqueeze(1)).sum(2) + bs[-1].unsqueeze(1)
    return (out - y).square().mean(1)


def real_masks(p: Params) -> list[torch.Tensor]:
    """1 where a weight (w1, b1, w2, b2, ... as Params.weights()) belongs to the real network."""
    ones_in = torch.ones_like(p.ws[0][:, :, 0])  # inputs are never padding
    outs = [*p.masks, torch.ones_like(p.bs[-1])]  # output unit(s) are real
    ins = [ones_in, *p.masks]
    masks = []
    for n in range(len(p.ws)):
        w = p.ws[n]
        if w.dim() == 3:
            masks.append(ins[n].unsqueeze(2) * outs[n].unsqueeze(1))
        else:  # the output's w_o [K, H_L]
            masks.append(ins[n])
        masks.append(outs[n])
    return masks


class Sharpness:
    """Measures lambda_max of every member's loss Hessian (Params layout, any padding).

    tol: stop when every member's top Ritz value moved by less than tol (relative) over the
    last CHECK_EVERY products; steps: at most this many products per measurement.
    """

    CHECK_EVERY = 4

    def __init__(self, p: Params, seed: int = 0, tol: float = 1e-5, steps: int = 60):
        self.tol, self.steps = tol, steps
        weights = p.weights()
        self.shapes = [t.shape[1:] for t in weights]
        self.mask = _flat(real_masks(p))  # [K, P]: 1 on the real network's weights
        g = torch.Generator().manual_seed(seed)
        start = torch.randn(self.mask.shape, generator=g, dtype=self.mask.dtype).to(self.mask.device)
        self.v = _unit(start * self.mask)  # the last top eigenvector: where the next measurement starts

    def select(self, rows: torch.Tensor) -> None:
        """Keep the members at `rows` (as Params.select)."""
        self.v, self.mask = self.v[rows], self.mask[rows]

    def measure(self, p: Params, x: torch.Tensor, y: torch.Tensor, activation: str) -> torch.Tensor:
        """lambda_max [K] of each member's training loss at weights p."""
        with torch.enable_grad():
            w = [t.detach().requires_grad_() for t in p.weights()]
            grads = torch.autograd.grad(loss(w[0::2], w[1::2], x, y, activation).sum(), w, create_graph=True)

            def hvp(v: torch.Tensor) -> torch.Tensor:
                # d(grad . v)/dw. (Passing v as grad_outputs instead computes the same, but its
                # first call imports torch.fx's symbolic shapes: 0.6 s, more than a train run.)
                dot = sum((g * t).sum() for g, t in zip(grads, _unflat(v, self.shapes)))
                hv = torch.autograd.grad(dot, w, retain_graph=True)
                return _flat([t.detach() for t in hv]) * self.mask

            top, self.v = lanczos(hvp, self.v, int(self.mask.sum(1).max()), self.steps, self.tol, self.CHECK_EVERY)
        return top


def lanczos(hvp, q: torch.Tensor, dims: int, steps: int, tol: float, check_every: int):
    """The top eigenvalue [K] of each member's H and its eigenvector [K, P], from start q [K, P]
    (unit rows), by Lanczos with full re-orthogonalisation."""
    k, n = q.shape[0], min(steps, dims)
    basis = q.new_zeros(k, n + 1, q.shape[1])
    alpha, beta = q.new_zeros(k, n), q.new_zeros(k, n)
    basis[:, 0] = q
    last = None
    for j in range(n):
        w = hvp(basis[:, j])
        alpha[:, j] = (basis[:, j] * w).sum(1)
        for _ in range(2):  # w minus its components along every basis vector so far
            w = w - torch.einsum("kj,kjp->kp", torch.einsum("kjp,kp->kj", basis[:, :j + 1], w), basis[:, :j + 1])
        beta[:, j] = w.norm(dim=1)
        basis[:, j + 1] = w / beta[:, j].clamp_min(torch.finfo(w.dtype).tiny).unsqueeze(1)
        if j + 1 == n or (j + 1) % check_every == 0:
            top, y = _ritz(alpha[:, :j + 1], beta[:, :j + 1])
            # Converged, or blown up (a member about to be found diverged: nothing to wait for).
            if j + 1 == n or (last is not None and bool(((top - last).abs() <= tol * top.abs())
                                                        .logical_or_(~torch.isfinite(top)).all())):
                return top.to(q.dtype), _unit(torch.einsum("kj,kjp->kp", y.to(q.dtype), basis[:, :j + 1]))
            last = top
    raise AssertionError("unreachable")


def _ritz(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvalue and eigenvector of each member's tridiagonal T (diagonal alpha, off-diagonal
    beta), in float64. A member whose Krylov space ran out (beta ~ 0: fewer real weights than
    steps) keeps T up to there: the rows after it are decoupled and set to its smallest
    diagonal entry, below its top eigenvalue, so they never win."""
    a, b = alpha.double(), beta.double()
    scale = a.abs().amax(1, keepdim=True).clamp_min(1e-300)
    ended = (b <= 1e-6 * scale).cumsum(1) > 0  # [K, j]: True from the step the space ran out
    after = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1)  # rows beyond that step
    floor = torch.where(after, torch.full_like(a, float("inf")), a).amin(1, keepdim=True)
    a = torch.where(after, floor, a)
    b = torch.where(ended, torch.zeros_like(b), b)[:, :-1]
    t = torch.diag_embed(a) + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)  # a blown-up member: no value, no error
    values, vectors = torch.linalg.eigh(t)
    blown = ~torch.isfinite(alpha).all(1)
    top = torch.where(blown, torch.full_like(values[:, -1], float("nan")), values[:, -1])
    return top, vectors[:, :, -1]


def _flat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(t.shape[0], -1) for t in ts], 1)


def _unflat(v: torch.Tensor, shapes) -> list[torch.Tensor]:
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    return [part.reshape(v.shape[0], *s) for part, s in zip(v.split(sizes, 1), shapes)]


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=1, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))
