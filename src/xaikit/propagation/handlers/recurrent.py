"""Recurrent networks: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (the fused ``_VF.lstm``/``gru``/``rnn_tanh``/
``rnn_relu``) unrolled into per-step linear maps, sigmoid gates, ``tanh`` and the gate products. With the
default ``gate="signal_takes_all"`` the gates get no relevance (Arras et al. 2017, sec. 2.3; Arras et al. 2019)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..explained import stop
from .layers import linear
from .plain import call, classify_plain

if TYPE_CHECKING:
    from ..session import Session


_RNN = ("input", "hx", "params", "has_biases", "num_layers", "dropout", "train", "bidirectional", "batch_first")


def _gated(s: Session, gate: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """``gate ⊙ signal`` through the product rule. A signal that does not depend on the input (an initial
    state, a bias) keeps its relevance as absorbed under "signal takes all" instead of passing it to the gate."""
    if not s.is_activation(signal) and s.composite.op_rule("gate") == "signal_takes_all":
        if s.is_activation(gate):
            s.coverage.add("handled", "mul:signal_takes_all")
        return call(s, torch.mul, stop(s, gate), signal)  # a constant: a sum with it absorbs its share
    return call(s, torch.mul, gate, signal)


def _sigmoid_gate(s: Session, z: torch.Tensor) -> torch.Tensor:
    out = call(s, torch.sigmoid, z)
    s.tag_gate(out)
    return out


def _lstm_cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
    z = call(s, torch.add, x_part, linear(s, h, w_hh, b_hh, param_hh))
    i, f, g, o = call(s, torch.chunk, z, 4, -1)
    i, f, o = _sigmoid_gate(s, i), _sigmoid_gate(s, f), _sigmoid_gate(s, o)
    g = call(s, torch.tanh, g)
    c = call(s, torch.add, _gated(s, f, c), _gated(s, i, g))
    h = _gated(s, o, call(s, torch.tanh, c))
    if w_hr is not None:
        h = linear(s, h, w_hr, None, param_hr)
    return h, c


def _gru_cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
    xr, xz, xn = call(s, torch.chunk, x_part, 3, -1)
    hr, hz, hn = call(s, torch.chunk, linear(s, h, w_hh, b_hh, param_hh), 3, -1)
    r = _sigmoid_gate(s, call(s, torch.add, xr, hr))
    a = call(s, torch.add, xz, hz)
    z = _sigmoid_gate(s, a)
    keep = _sigmoid_gate(s, call(s, torch.neg, a))  # 1 − σ(a) = σ(−a): a gate, homogeneous path to a
    n = call(s, torch.tanh, call(s, torch.add, xn, _gated(s, r, hn)))
    return call(s, torch.add, _gated(s, keep, n), _gated(s, z, h)), None


def _simple_cell(activation: Callable) -> Callable:
    def cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
        return call(s, activation, call(s, torch.add, x_part, linear(s, h, w_hh, b_hh, param_hh))), None

    return cell


CELLS = {"lstm": _lstm_cell, "gru": _gru_cell, "rnn_tanh": _simple_cell(torch.tanh),
          "rnn_relu": _simple_cell(torch.relu)}


def recurrent(s: Session, func, name, args, kwargs, acts):
    """``_VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu`` on a padded batch, unrolled step by step.

    The input projection of all time steps is one linear call per layer and direction; the recurrent
    projection is one call per step. Inter-layer dropout is not applied. Packed sequences are run as they
    are and reported as unknown.
    """
    packed = isinstance(args[1], torch.Tensor) and not args[1].is_floating_point()
    if packed or len(args) < len(_RNN):
        return classify_plain(s, func, f"{name}(packed)", args, kwargs, acts)
    p = dict(zip(_RNN, args))
    s.coverage.add("handled", f"{name}:unrolled")
    x, hx, params = p["input"], p["hx"], list(p["params"])
    layers, dirs = p["num_layers"], 2 if p["bidirectional"] else 1
    if not p["batch_first"]:  # (N, T, F): batch-major, so that what the layers absorb is counted per sample
        x = call(s, torch.transpose, x, 0, 1)
    h0, c0 = (hx if name == "lstm" else (hx, None))
    per = len(params) // (layers * dirs)
    cell = CELLS[name]
    finals_h, finals_c = [], []
    for layer_index in range(layers):
        outputs = []
        for direction in range(dirs):
            k = layer_index * dirs + direction
            w = params[k * per:(k + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if p["has_biases"] else (None, None)
            w_hr = w[-1] if per in (3, 5) else None  # LSTM with proj_size
            x_all = linear(s, x, w_ih, b_ih)
            steps = call(s, torch.unbind, x_all, 1)
            order = range(len(steps) - 1, -1, -1) if direction else range(len(steps))
            h, c = h0[k], (c0[k] if c0 is not None else None)
            hs = [None] * len(steps)
            for t in order:
                h, c = cell(s, steps[t], h, c, w_hh, b_hh, w_hr, w_hh, w_hr)
                hs[t] = h
            outputs.append(call(s, torch.stack, hs, 1))
            finals_h.append(h)
            finals_c.append(c)
        x = outputs[0] if dirs == 1 else call(s, torch.cat, outputs, -1)
    out = x if p["batch_first"] else call(s, torch.transpose, x, 0, 1)
    h_n = call(s, torch.stack, finals_h, 0)
    if name == "lstm":
        return out, h_n, call(s, torch.stack, finals_c, 0)
    return out, h_n
