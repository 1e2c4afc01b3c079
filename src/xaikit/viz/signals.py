"""Figures of signal explanations: relevance over time and over frequency, and the spectrogram heatmap of a
virtual inspection layer (:class:`xaikit.signals.VirtualInspection`)."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..explanation import Explanation
from .heatmap import relevance_cmap

_RED, _BLUE = "#d62728", "#1f77b4"


def _bins(expl: Explanation, sample: int) -> np.ndarray:
    bins = expl.info.get("bins")
    if bins is None:
        raise ValueError("explanation has no info['bins']; give the result of xaikit.signals.VirtualInspection")
    return bins[sample].detach().cpu().double().sum(0).numpy()  # channels summed


def plot_signal_relevance(expl: Explanation, x: torch.Tensor, sample: int = 0, rate: float = 1.0,
                          title: str | None = None) -> Figure:
    """Three panels of one sample: the signal coloured by its time-domain relevance, the relevance over
    frequency (a DFT view: bars; an STFT view: summed over frames) and, for an STFT view, the spectrogram
    heatmap (frequency × time, red for, blue against). ``rate``: samples per second, for the axes."""
    bins = _bins(expl, sample)
    frequencies = expl.info["frequencies"].cpu().numpy() * (rate if rate != 1.0 else 1.0)
    spectro = bins.ndim == 2
    fig = Figure(figsize=(9.0, 7.5 if spectro else 5.0))
    axes = fig.subplots(3 if spectro else 2, 1)
    signal = x[sample].detach().cpu().double().reshape(-1, x.shape[-1]).sum(0).numpy()
    t = np.arange(len(signal)) / rate
    time_relevance = expl.info.get("time_attribution")
    ax = axes[0]
    ax.plot(t, signal, color="0.6", linewidth=0.6)
    if time_relevance is not None:
        r = time_relevance[sample].detach().cpu().double().reshape(-1, x.shape[-1]).sum(0).numpy()
        span = float(np.abs(r).max()) or 1.0
        ax.scatter(t, signal, c=r, cmap=relevance_cmap(), vmin=-span, vmax=span, s=2)
        ax.set_title("signal, coloured by time-domain relevance", fontsize=9)
    ax.set_xlabel("time (s)" if rate != 1.0 else "sample")
    per_frequency = bins.sum(1) if spectro else bins
    ax = axes[1]
    ax.bar(frequencies, per_frequency, width=(frequencies[1] - frequencies[0]) if len(frequencies) > 1 else 1,
           color=[_RED if v >= 0 else _BLUE for v in per_frequency])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("frequency (Hz)" if rate != 1.0 else "frequency (cycles per sample)")
    ax.set_title("relevance over frequency", fontsize=9)
    if spectro:
        ax = axes[2]
        span = float(np.abs(bins).max()) or 1.0
        frames = bins.shape[1]
        extent = (0, len(signal) / rate, frequencies[0], frequencies[-1])
        image = ax.imshow(bins, origin="lower", aspect="auto", cmap=relevance_cmap(), vmin=-span, vmax=span,
                          extent=extent, interpolation="nearest")
        fig.colorbar(image, ax=ax, label="relevance")
        ax.set_xlabel("time (s)" if rate != 1.0 else "sample")
        ax.set_ylabel("frequency")
        ax.set_title(f"relevance of the STFT cells ({bins.shape[0]} bins × {frames} frames)", fontsize=9)
    fig.suptitle(title if title is not None else expl.method, fontsize=10)
    fig.tight_layout()
    return fig
