"""Exact, real-valued transform pairs of signals: the DFT and the STFT, real and imaginary parts stacked.

A transform maps a signal ``x`` ``(N, C, T)`` to real coefficients ``s = forward(x)`` whose inverse
``inverse(s)`` gives ``x`` back (round trip ≤ 1e-6 in float32 for signals of unit scale). Both inverses are
linear maps without an offset, ``x_t = Σ_k W_tk s_k``: the virtual inspection layer of Vielhaben et al.
(Pattern Recognition 2024, Sec. 3) that the relevance is propagated through.

- :class:`DFT`: ``torch.fft.rfft`` with the orthonormal scaling, coefficients ``(N, C, 2, F)`` with
  ``F = T // 2 + 1`` (index 0 of dim 2: the real part, 1: the imaginary part);
- :class:`STFT`: ``torch.stft`` with a Hann window (a hop of a quarter window by default, which satisfies the
  overlap-add condition, so ``torch.istft`` inverts it), coefficients ``(N, C, 2, F, M)`` for ``M`` frames;
  the forward transform and the adjoint are one batched real FFT of strided (``unfold``) frames each.
"""
from __future__ import annotations

import torch

from ..errors import check_positive


def check_signal(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A batch of signals ``(N, C, T)`` (or ``(N, T)``: one channel): raise, naming ``name``, otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of signals (N, C, T), got {type(x).__name__}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {tuple(x.shape)}: a signal needs a time axis, (N, C, T) or (N, T) with "
                         "time last; reshape it (e.g. x[:, None] for one channel) or use an image method")
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floating-point samples, got dtype {x.dtype}")
    if x.shape[-1] < 2:
        raise ValueError(f"{name} has a time axis of length {x.shape[-1]}; a signal needs at least 2 samples")
    return x


class Transform:
    """An exact pair ``forward`` / ``inverse`` between signals ``(N, C, T)`` and real coefficients."""

    #: names of the coefficient axes after (N, C, part), for results and figures
    axes: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, s: torch.Tensor, length: int) -> torch.Tensor:
        raise NotImplementedError

    def frequencies(self, length: int, rate: float = 1.0) -> torch.Tensor:
        """The frequency of each bin (cycles per sample times ``rate``)."""
        raise NotImplementedError

    def forward_and_adjoint(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward(x), adjoint(v))`` for signals of one shape: what the virtual layer's z-rule needs (a
        transform may compute both in one pass, as :class:`STFT` does)."""
        return self.forward(x), self.adjoint(v)

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """``Wᵀ v`` for the inverse ``x = W s``: the vector–Jacobian product of :meth:`inverse` (by automatic
        differentiation here; the built-in transforms have it in closed form)."""
        s = self.forward(torch.zeros_like(v)).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad((self.inverse(s, v.shape[-1]) * v).sum(), s)
        return grad


def _hermitian_weights(bins: int, even: bool, like: torch.Tensor) -> torch.Tensor:
    """How often a one-sided bin counts in the full spectrum: 1 for DC (and Nyquist of an even length), else 2."""
    weights = torch.full((bins,), 2.0, dtype=like.dtype, device=like.device)
    weights[0] = 1
    if even:
        weights[-1] = 1
    return weights


class DFT(Transform):
    """The real DFT with orthonormal scaling: ``s = (Re X, Im X)``, ``X = rfft(x) / √T``."""

    axes = ("frequency",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x, norm="ortho")
        return torch.stack([spectrum.real, spectrum.imag], dim=-2)

    def inverse(self, s: torch.Tensor, length: int) -> torch.Tensor:
        return torch.fft.irfft(torch.complex(s[..., 0, :], s[..., 1, :]), n=length, norm="ortho")

    def frequencies(self, length: int, rate: float = 1.0) -> torch.Tensor:
        return torch.fft.rfftfreq(length, d=1.0 / rate)

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """``Wᵀ v = c ⊙ (Re, Im) rfft(v)`` (orthonormal): ``irfft`` counts the inner bins twice (``c = 2``)."""
        length = v.shape[-1]
        return self.forward(v) * _hermitian_weights(length // 2 + 1, length % 2 == 0, v)

    def __repr__(self) -> str:
        return "DFT()"


class STFT(Transform):
    """The short-time Fourier transform with a Hann window (``torch.stft``, ``center=True``).

    Parameters
    ----------
    n_fft : int
        Window length (frequency bins: ``n_fft // 2 + 1``).
    hop : int, optional
        Samples between frames (default ``n_fft // 4``: the Hann window's overlap-add is then constant, so the
        inverse is exact).
    """

    axes = ("frequency", "time")

    def __init__(self, n_fft: int = 256, hop: int | None = None) -> None:
        check_positive(n_fft, "n_fft", integer=True)
        if hop is not None:
            check_positive(hop, "hop", integer=True)
        self.n_fft, self.hop = n_fft, hop or max(1, n_fft // 4)
        self._cache: dict[tuple, torch.Tensor] = {}  # windows and envelopes per (length,) dtype and device
        if self.hop > n_fft // 2:
            raise ValueError(f"hop {self.hop} > n_fft // 2 = {n_fft // 2}: the Hann windows would not overlap enough "
                             "for an exact inverse; give hop <= n_fft // 2 (default n_fft // 4)")

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        key = ("window", x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = torch.hann_window(self.n_fft, dtype=x.dtype, device=x.device)
        return self._cache[key]

    def _frames(self, length: int) -> tuple[int, int]:
        """The padded length ``L = T + 2 (n_fft // 2)`` of a centred STFT and its frames ``M = 1 + (L - n_fft) // hop``
        (``1 + T // hop`` for an even window)."""
        padded = length + 2 * (self.n_fft // 2)
        return 1 + (padded - self.n_fft) // self.hop, padded

    def _spectrum(self, wide: torch.Tensor) -> torch.Tensor:
        """Real and imaginary parts ``(B, M, F, 2)`` of the Hann-windowed frames of padded signals ``(B, L)``: one
        batched real FFT of strided frames (``unfold`` is a view; the window's product is the only copy)."""
        return torch.view_as_real(torch.fft.rfft(wide.unfold(-1, self.n_fft, self.hop) * self._window(wide)))

    @staticmethod
    def _coefficients(spectrum: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """``(B, M, F, 2)`` seen as the coefficient layout ``(*lead, 2, F, M)``: a permuted view, not a copy."""
        frames, bins = spectrum.shape[1:3]
        return spectrum.permute(0, 3, 2, 1).reshape(*lead, 2, bins, frames)

    def _padded_signal(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as rows ``(B, T + 2 (n_fft // 2))``, reflection-padded as ``torch.stft(center=True)`` does."""
        if x.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"x has {x.shape[-1]} samples; STFT(n_fft={self.n_fft}) needs more than {self.n_fft // 2}")
        half = self.n_fft // 2
        return torch.nn.functional.pad(x.reshape(-1, 1, x.shape[-1]), (half, half), mode="reflect")[:, 0]

    def _padded_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` as rows zero-padded by ``n_fft // 2`` and scaled by ``2 / (n_fft · envelope)`` (:meth:`_scale`)."""
        half = self.n_fft // 2
        return torch.nn.functional.pad(v.reshape(-1, v.shape[-1]), (half, half)) * self._scale(v.shape[-1], v)

    @staticmethod
    def _halve_edges(spectrum: torch.Tensor, even: bool) -> torch.Tensor:
        """Halve DC (and, for an even window, Nyquist) in place: ``irfft`` counts them once, the others twice."""
        spectrum[:, :, 0].mul_(0.5)
        if even:
            spectrum[:, :, -1].mul_(0.5)
        return spectrum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``torch.stft(x, n_fft, hop, hann, center=True)`` (reflection-padded by ``n_fft // 2``), computed as one
        batched FFT of strided frames; ``(N, C, 2, F, M)``, contiguous."""
        return self._coefficients(self._spectrum(self._padded_signal(x)), x.shape[:-1]).contiguous()

    def forward_and_adjoint(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both in one batched FFT of the frames of ``x`` and ``v`` and one copy into the coefficient layout."""
        if x.shape != v.shape:
            return self.forward(x), self.adjoint(v)
        rows = x.reshape(-1, x.shape[-1]).shape[0]
        spectrum = self._spectrum(torch.cat([self._padded_signal(x), self._padded_adjoint(v)]))
        self._halve_edges(spectrum[rows:], self.n_fft % 2 == 0)
        both = self._coefficients(spectrum, (2, *x.shape[:-1])).contiguous()
        return both[0], both[1]

    def inverse(self, s: torch.Tensor, length: int) -> torch.Tensor:
        lead = s.shape[:-3]
        flat = s.reshape(-1, *s.shape[-3:])
        signal = torch.istft(torch.complex(flat[:, 0], flat[:, 1]), self.n_fft, self.hop,
                             window=self._window(s), center=True, length=length)
        return signal.reshape(*lead, length)

    def frequencies(self, length: int, rate: float = 1.0) -> torch.Tensor:
        return torch.fft.rfftfreq(self.n_fft, d=1.0 / rate)

    def _scale(self, length: int, like: torch.Tensor) -> torch.Tensor:
        """``2 / (n_fft · e)`` on the kept samples of the padded signal, ``e`` the overlap-added squared window
        (the envelope ``istft`` divides by), zero on the centre padding; cached per length, dtype and device."""
        key = ("scale", length, like.dtype, like.device)
        if key not in self._cache:
            n, hop = self.n_fft, self.hop
            frames, padded = self._frames(length)
            squared = self._window(like).pow(2).view(1, n, 1).expand(1, n, frames)
            envelope = torch.nn.functional.fold(squared, (1, padded), (1, n), stride=(1, hop))[0, 0, 0]
            envelope = envelope[n // 2:n // 2 + length]
            scale = like.new_zeros(padded)
            scale[n // 2:n // 2 + length] = 2 / (n * torch.where(envelope > 1e-11, envelope, torch.ones_like(envelope)))
            if len(self._cache) > 16:  # a few lengths at a time; never grows without bound
                self._cache.clear()
            self._cache[key] = scale
        return self._cache[key]

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """``Wᵀ v`` of ``istft``: the overlap-add divides by the window envelope and trims the centre padding, so
        its adjoint zero-pads ``v``, divides by the envelope and takes the (unpadded) STFT, ``c / n_fft``-scaled
        (``c = 2`` for the inner bins, 1 for DC and Nyquist, as ``irfft`` counts them). The ``2 / n_fft`` is folded
        into the (cached) envelope, the DC and Nyquist bins are halved after one batched FFT of strided frames;
        ``(N, C, 2, F, M)``, contiguous (so that the z-rule's product with the coefficients streams)."""
        spectrum = self._halve_edges(self._spectrum(self._padded_adjoint(v)), self.n_fft % 2 == 0)
        return self._coefficients(spectrum, v.shape[:-1]).contiguous()

    def __repr__(self) -> str:
        return f"STFT(n_fft={self.n_fft}, hop={self.hop})"
