"""Signals in the frequency and time-frequency domain: virtual inspection layers (Vielhaben et al. 2024).

An exact transform / inverse-transform pair (:class:`DFT`, :class:`STFT`) is put in front of a model of
signals ``(N, C, T)``, so that every method's relevance lands in frequency bins or (frequency, time) cells:
:class:`VirtualInspection` is the tool, :func:`band_features` groups bins into bands for the perturbation
methods.
"""
from .transforms import DFT, STFT, Transform, check_signal
from .view import VirtualInspection, band_features

__all__ = ["DFT", "STFT", "Transform", "VirtualInspection", "band_features", "check_signal"]
