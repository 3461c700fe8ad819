"""A trained network's weights as files: plain JSON that loading never executes, read back
with its shapes checked, and the same network as a torch.nn.Sequential for export."""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np


def weights_json(weights: Mapping[str, Any]) -> str:
    """Weights as JSON: readable anywhere, and loading it never executes code (unlike pickle)."""
    return json.dumps({k: np.asarray(v).tolist() for k, v in weights.items()})


def parse_weights(text: str) -> dict[str, np.ndarray]:
    """Weights written by weights_json; anything else is rejected with a clear error.

    A network of L hidden layers has w1, b1, ..., w{L+1}, b{L+1} in the seed's shapes:
    w_n [H_n, H_{n-1}] (H_0 = the inputs), b_n [H_n, 1], the last layer's H = 1.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a bpexp weights file (not JSON: {e.msg})") from None
    except RecursionError:  # crafted: arrays nested thousands deep
        raise ValueError("not a bpexp weights file (nested too deep)") from None
    layers = len(data) // 2 if isinstance(data, dict) else 0
    names = {f"{k}{n}" for n in range(1, layers + 1) for k in "wb"}
    if layers < 2 or set(data) != names:
        raise ValueError("not a bpexp weights file (expected the keys w1, b1, w2, b2, ... in pairs)")
    try:
        w = {k: np.asarray(data[k], dtype=np.float32) for k in sorted(names, key=lambda k: (int(k[1:]), k))}
    except (TypeError, ValueError, RecursionError):
        raise ValueError("not a bpexp weights file (values must be arrays of numbers)") from None
    fan_in = w["w1"].shape[1] if w["w1"].ndim == 2 else 0
    for n in range(1, layers + 1):
        wn, bn = w[f"w{n}"], w[f"b{n}"]
        out = wn.shape[0] if wn.ndim == 2 else 0
        if not (fan_in >= 1 and out >= 1 and wn.shape == (out, fan_in) and bn.shape == (out, 1)
                and (n < layers or out == 1)):
            raise ValueError(f"not a bpexp weights file (w{n}, b{n}: shapes must be [H_out, H_in] and [H_out, 1], "
                             "one output)")
        fan_in = out
    return w


def torch_module(w: Mapping[str, np.ndarray], activation: str):
    """The network as a plain torch.nn.Sequential (Linear, act, ..., Linear), for export."""
    import torch

    act_module = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[activation]
    layers = []
    for n in range(1, len(w) // 2 + 1):
        wn = w[f"w{n}"]
        lin = torch.nn.Linear(wn.shape[1], wn.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wn))
            lin.bias.copy_(torch.from_numpy(w[f"b{n}"][:, 0]))
        layers += [lin, act_module()]
    return torch.nn.Sequential(*layers[:-1])  # no activation after the output layer
