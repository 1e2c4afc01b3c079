"""Virtual inspection layers (Vielhaben et al. 2024): relevance in frequency bins and (frequency, time) cells."""
import pytest
import torch
from torch import nn

from models import assert_unchanged, snapshot
from xaikit.signals import DFT, STFT, VirtualInspection, band_features

T, LO, HI = 64, 10, 14  # the deciding band: DFT bins 10..13 of 33


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.transpose(1, 2))
        return self.fc(out[:, -1])


def conv_net(channels: int = 2) -> nn.Module:
    return nn.Sequential(nn.Conv1d(channels, 4, 9, padding=4), nn.ReLU(), nn.Conv1d(4, 4, 9), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("transform", [DFT(), STFT(64), STFT(32, hop=8)])
def test_round_trip_is_exact(transform):
    x = torch.randn(3, 2, 1000, generator=torch.Generator().manual_seed(0))
    assert (transform.inverse(transform.forward(x), 1000) - x).abs().max() <= 1e-6


@pytest.mark.parametrize("kind", ["conv", "lstm"])
@pytest.mark.parametrize("transform", ["dft", STFT(16)])
def test_lrp_through_the_view_conserves_the_time_domain_total(kind, transform):
    torch.manual_seed(0)
    model = (conv_net() if kind == "conv" else LSTMNet()).eval()
    x = torch.randn(4, 2, T)
    before = snapshot(model)
    expl = VirtualInspection(model, transform, method="lrp:composite=epsilon")(x, target=1)
    time_total = expl.info["time_attribution"].flatten(1).sum(1)
    assert (expl.attribution.flatten(1).sum(1) - time_total).abs().max() <= 1e-5  # float32
    assert expl.info["conservation_gap"].abs().max() <= 1e-5
    assert expl.info["bins"].shape == ((4, 2, T // 2 + 1) if transform == "dft" else (4, 2, 9, T // 4 + 1))
    assert_unchanged(model, before)


def test_propagated_decompositions_equal_the_method_run_on_the_coefficients():
    """Gradient × input through the virtual layer is gradient × input of f(inverse(s)) in s; IG likewise."""
    torch.manual_seed(0)
    model = conv_net().double().eval()
    x = torch.randn(3, 2, T, dtype=torch.float64)
    for method in ("input_x_gradient", "integrated_gradients"):
        propagated = VirtualInspection(model, "dft", method=method)(x, 0)
        on_coefficients = VirtualInspection(model, "dft", method=method, mode="inputs")(x, 0)
        assert propagated.info["mode"] == "propagate" and on_coefficients.info["mode"] == "inputs"
        torch.testing.assert_close(propagated.attribution, on_coefficients.attribution, atol=1e-10, rtol=1e-8)


def band_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadband noise; class 1 adds noise of the same power confined to the deciding band."""
    y = torch.arange(n) % 2
    keep = torch.zeros(T // 2 + 1)
    keep[LO:HI] = 1
    band = torch.fft.irfft(torch.fft.rfft(torch.randn(n, 1, T, generator=generator)) * keep, n=T)
    band = band / band.std(-1, keepdim=True)
    return torch.randn(n, 1, T, generator=generator) + y[:, None, None] * band, y


@pytest.fixture(scope="module")
def band_task():
    generator = torch.Generator().manual_seed(0)
    x, y = band_data(128, generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 15, padding=7), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    optimiser = torch.optim.Adam(model.parameters(), 5e-2)
    for _ in range(60):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    x_test, y_test = band_data(64, generator)
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() >= 0.95
    return model.eval(), x_test[y_test == 1][:16]


@pytest.mark.parametrize("method", ["lrp:composite=epsilon", "lrp:composite=epsilon_plus", "integrated_gradients"])
def test_band_task_relevance_falls_in_the_deciding_band(band_task, method, capsys):
    model, x = band_task
    expl = VirtualInspection(model, "dft", method=method)(x, target=1)
    positive = expl.info["bins"][:, 0].clamp_min(0)
    share = positive[:, LO:HI].sum() / positive.sum()
    # the time-domain relevance of the same explanation: the best window as wide (relatively) as the band
    # holds little more than its width, because the band's oscillation spans the whole signal
    time = expl.info["time_attribution"][:, 0].clamp_min(0)
    width = round(T * (HI - LO) / (T // 2 + 1))
    window = (time.unfold(1, width, 1).sum(-1).max(1).values / time.sum(1)).mean()
    with capsys.disabled():
        print(f"\n{method}: {share:.1%} of the positive frequency relevance in the deciding band (4 of 33 bins); "
              f"time domain: best {width}-sample window {window:.1%} (uniform {width / T:.1%})")
    assert share >= 0.9
    assert window < 0.5


def test_band_shapley_and_occlusion_find_the_band(band_task):
    model, x = band_task
    expl = VirtualInspection(model, "dft", method="exact_shapley", bands=8)(x[:4], target=1)
    per_band = expl.info["bins"][:, 0].reshape(4, -1)  # each band's value is spread over its bins
    features = band_features(expl.info["coefficients"], 8, 2)[0, 0, 0]
    deciding = features[LO:HI].unique()  # the Shapley bands that overlap the deciding bins (2 of 8)
    values = torch.stack([per_band[:, features == b].sum(1) for b in range(8)], 1)
    assert torch.isin(values.argmax(1), deciding).all()
    assert (values[:, deciding].sum(1) / values.clamp_min(0).sum(1)).min() >= 0.9
    occlusion = VirtualInspection(model, "dft", method="occlusion:window=4", mode="inputs")(x[:4], target=1)
    blocks = occlusion.info["bins"][:, 0, :32].reshape(4, 8, 4).sum(2)  # windows of 4 bins
    assert torch.isin(blocks.argmax(1), torch.tensor([LO // 4, (HI - 1) // 4])).all()


def test_a_signal_without_a_time_axis_is_named():
    model = conv_net()
    with pytest.raises(ValueError, match=r"x has shape \(4,\): a signal needs a time axis"):
        VirtualInspection(model, "dft")(torch.randn(4))
    with pytest.raises(ValueError, match=r"x has shape \(2, 2, 8, 8\): a signal needs a time axis"):
        VirtualInspection(model, "dft")(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="mode 'propagate' needs"):
        VirtualInspection(model, "dft", method="occlusion", mode="propagate")
    with pytest.raises(TypeError, match="did you mean 'transform'"):
        VirtualInspection(model, transfrom="dft")


@pytest.mark.parametrize("transform", [DFT(), STFT(64, 16), STFT(32, 8), STFT(33, 8)])
@pytest.mark.parametrize("length", [1000, 999])
def test_closed_form_adjoint_equals_the_vector_jacobian_product_of_the_inverse(transform, length):
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, length, generator=generator, dtype=torch.float64)
    s = transform.forward(torch.randn(2, 3, length, generator=generator, dtype=torch.float64)).requires_grad_(True)
    (expected,) = torch.autograd.grad((transform.inverse(s, length) * v).sum(), s)
    torch.testing.assert_close(transform.adjoint(v), expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("transform", [STFT(64, 16), STFT(33, 8), STFT(8, 4)])
def test_stft_of_strided_frames_equals_torch_stft(transform):
    """The forward transform (one batched FFT of unfolded frames) is torch.stft's centred, reflection-padded STFT."""
    x = torch.randn(2, 3, 301, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    window = torch.hann_window(transform.n_fft, dtype=torch.float64)
    spec = torch.stft(x.reshape(6, 301), transform.n_fft, transform.hop, window=window, center=True,
                      return_complex=True)
    expected = torch.stack([spec.real, spec.imag], 1).reshape(2, 3, 2, *spec.shape[1:])
    torch.testing.assert_close(transform.forward(x), expected, atol=1e-12, rtol=1e-10)
    assert transform.forward(x).is_contiguous() and transform.adjoint(x).is_contiguous()
    v = torch.randn(2, 3, 301, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s, adjoint = transform.forward_and_adjoint(x, v)  # one batched pass: the same as the two
    torch.testing.assert_close(s, transform.forward(x), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(adjoint, transform.adjoint(v), atol=1e-12, rtol=1e-10)
