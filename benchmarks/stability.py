"""How well does 2 / sharpness at init predict where the learning rate stops training?

For each width (1-32) and activation (tanh, then relu) on the seed's task (sin on 20 points,
plain gradient descent, 5000 epochs), a dense lr grid is trained for several init seeds, all
as one population per activation, sharpness (the loss Hessian's lambda_max) measured along
the way. Per width it prints:

- predicted: 2 / lambda_max of the initial networks (median over seeds), what
  `bpexp lr-find lr_find=sharpness` reports before any training;
- diverges: the measured edge, the smallest grid lr at which the seed diverged (median over
  seeds), and its ratio to the prediction;
- best lr: the grid lr with the lowest median final loss among those where every seed
  converged, and its ratio to the prediction;
- edge ratio: lr x lambda_max(end) / 2 at the largest lr where every seed converged
  (median over seeds): 1 means training ended at the edge of stability, sharpness = 2 / lr;
- catapult: at that lr, the highest training loss over the initial one (median over seeds):
  above 1, the loss first rose, the network left the sharp region it started in, then trained.

    python benchmarks/stability.py                   # the README's table (~2 min on 2 cores)
    python benchmarks/stability.py --epochs 1000 --lrs 24 --widths 1 4 16   # a quick look
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bpexp.training.data import make_dataset
from bpexp.training.population import Member, TrainSpec, train_population


def run(activation: str, widths, lrs, seeds, epochs: int) -> list[dict]:
    data = make_dataset("sin", -5, 5, 20)
    members = [Member(w, activation, float(lr), s) for w in widths for lr in lrs for s in seeds]
    t0 = time.perf_counter()
    results = train_population(members, data, TrainSpec(epochs, sharpness_every=0))
    took = time.perf_counter() - t0
    rows = []
    for w in widths:
        mine = [r for r in results if r.member.hidden == w]
        init = np.median([r.sharpness[0] for r in mine if r.member.lr == lrs[0]])
        predicted = 2 / init
        edges, finals = [], {}
        for s in seeds:
            by_lr = sorted((r for r in mine if r.member.seed == s), key=lambda r: r.member.lr)
            bad = [r.member.lr for r in by_lr if r.status == "diverged"]
            edges.append(min(bad) if bad else np.nan)
            for r in by_lr:
                finals.setdefault(r.member.lr, []).append(r)
        trained = {lr: rs for lr, rs in finals.items() if all(r.status == "finished" for r in rs)}
        best = min(trained, key=lambda lr: np.median([r.final_train_loss for r in trained[lr]])) if trained else np.nan
        top = max(trained) if trained else None
        edge_ratio = (np.median([top * r.sharpness[-1] / 2 for r in trained[top]]) if top else np.nan)
        spike = np.median([r.train_loss.max() / r.train_loss[0] for r in trained[top]]) if top else np.nan
        diverges = float(np.median(edges)) if not np.all(np.isnan(edges)) else np.nan
        rows.append({"width": w, "predicted": predicted, "diverges": diverges, "ratio": diverges / predicted,
                     "largest_stable": top if top else np.nan, "best": best, "best_ratio": best / predicted,
                     "edge_ratio": edge_ratio, "spike": spike})
    print(f"{activation}: {len(members)} networks x {epochs} epochs trained in {took:.1f} s (sharpness every "
          f"{max(200, epochs // 10)} epochs included)")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--widths", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
    p.add_argument("--lrs", type=int, default=48, help="grid points, log-spaced over [1e-4, 10]")
    p.add_argument("--seeds", type=int, default=3, help="init seeds 99, 100, ...")
    p.add_argument("--activations", nargs="+", default=["tanh", "relu"])
    a = p.parse_args()
    lrs = np.logspace(-4, 1, a.lrs)
    seeds = list(range(99, 99 + a.seeds))
    for act in a.activations:
        rows = run(act, a.widths, lrs, seeds, a.epochs)
        print("| width | 2/sharpness at init | diverges from lr | ratio | largest stable lr | best lr | "
              "best / predicted | lr x sharpness(end) / 2 | catapult: max loss / initial |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['width']} | {r['predicted']:.3g} | {r['diverges']:.3g} | {r['ratio']:.2f} | "
                  f"{r['largest_stable']:.3g} | {r['best']:.3g} | {r['best_ratio']:.2f} | {r['edge_ratio']:.2f} | "
                  f"{r['spike']:.3g} |")
        print()


if __name__ == "__main__":
    main()
