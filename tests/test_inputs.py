"""Bad input gets a clear error naming the argument; targets and chunked batching behave as documented."""
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.batching import batched_forward, chunked, select_batch
from xaikit.targets import resolve_target
from models import ResNetLike, assert_unchanged, mlp, randomise_batchnorm, snapshot


@pytest.fixture
def model():
    return mlp().eval()


@pytest.mark.parametrize("method", [xk.Gradient, xk.InputXGradient, xk.LRP])
def test_unknown_setting_names_the_setting_and_lists_valid_ones(model, method):
    with pytest.raises(TypeError, match="batch_sise"):
        method(model, batch_sise=4)


def test_unknown_composite_and_misplaced_settings(model):
    with pytest.raises(ValueError, match="unknown composite 'epsilon_gama_box'; valid: zero, epsilon, "):
        xk.LRP(model, composite="epsilon_gama_box")
    with pytest.raises(TypeError, match="unknown LRP setting 'gama'"):
        xk.LRP(model, composite="epsilon_gamma_box", gama=0.3)
    with pytest.raises(TypeError, match="composite 'epsilon' has no setting 'gamma'"):
        xk.LRP(model, composite="epsilon", gamma=0.3)
    with pytest.raises(ValueError, match="unknown relu rule 'guidd'"):
        xk.propagation.Composite("mine", ops={"relu": "guidd"})
    with pytest.raises(ValueError, match="unknown operation kind"):
        xk.propagation.Composite("mine", ops={"relus": "guided"})


def test_direct_rule_on_a_middle_layer_is_rejected(model):
    composite = xk.propagation.with_rules(xk.propagation.make_composite("epsilon"), by_name={"2": xk.propagation.rules.flat()})
    with pytest.raises(ValueError, match="only to the first layer"):
        xk.LRP(model, composite=composite)(torch.randn(2, 8))


@pytest.mark.parametrize("method", [xk.Gradient(mlp().eval()), xk.LRP(mlp().eval())])
def test_bad_inputs(method):
    before = snapshot(method.model)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        method(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="x contains NaN"):
        method(torch.full((2, 8), float("nan")))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        method([[0.0] * 8])
    with pytest.raises(ValueError, match="target 3 is out of range .* 3 values per sample"):
        method(torch.randn(2, 8), target=3)
    with pytest.raises(ValueError, match="target has 3 entries but the batch has 2 samples"):
        method(torch.randn(2, 8), target=[0, 1, 2])
    with pytest.raises(TypeError, match="integer class indices"):
        method(torch.randn(2, 8), target=torch.tensor([0.5, 1.0]))
    with pytest.raises(RuntimeError):  # wrong feature size: the model's own error passes through
        method(torch.randn(2, 7))
    assert_unchanged(method.model, before)


def test_device_mismatch_is_named(model):
    meta = torch.empty(2, 8, device="meta")
    with pytest.raises(ValueError, match="x is on device meta but the model is on cpu"):
        xk.Gradient(model)(meta)


def test_training_mode_warns_and_is_left_as_is():
    model = mlp().train()
    with pytest.warns(UserWarning, match="training mode"):
        xk.LRP(model)(torch.randn(2, 8))
    assert model.training


TRAIN_MODE_METHODS = {
    "lrp": lambda m: xk.LRP(m, composite="epsilon_plus"),
    "gradient": lambda m: xk.Gradient(m),
    "integrated_gradients": lambda m: xk.IntegratedGradients(m, steps=4),
    "occlusion": lambda m: xk.Occlusion(m, window=4),
    # the Shapley estimators fit their network surrogate (an optimisation of its own) inside the call; a fixed
    # chunk size, since the fit carries the last-bit differences of other chunkings on to about 1e-3
    "kernel_shap": lambda m: xk.KernelSHAP(m, features="grid:3", samples=40, seed=0, batch_size=8),
    "permutation_shapley": lambda m: xk.PermutationShapley(m, features="grid:3", permutations=4, seed=0,
                                                           batch_size=8),
}


@pytest.mark.parametrize("name", sorted(TRAIN_MODE_METHODS))
def test_a_model_in_training_mode_is_explained_in_eval_semantics_and_left_unchanged(name):
    """Issue 18.1: BatchNorm running statistics must not move, dropout must be off, the flags must survive."""
    model = randomise_batchnorm(ResNetLike(width=4), seed=3)
    model.layer1.train()  # a mixed model: one block in training mode, the rest in eval mode
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    with pytest.warns(UserWarning, match="computed in eval mode"):
        trained = TRAIN_MODE_METHODS[name](model)(x, target=1)
    assert_unchanged(model, before)
    reference = TRAIN_MODE_METHODS[name](model.eval())(x, target=1)
    assert torch.allclose(trained.attribution, reference.attribution, atol=1e-6)


def test_training_flags_are_restored_after_a_call_that_raised():
    model = mlp().train()
    model[1].eval()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"), pytest.raises(ValueError):
        xk.Gradient(model)(torch.randn(2, 8), target=7)  # target out of range is found after the forward
    assert_unchanged(model, before)


def test_a_metric_on_a_model_in_training_mode_leaves_its_statistics_alone():
    model = randomise_batchnorm(ResNetLike(width=4), seed=1).train()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    attribution = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        trained = xk.metrics.PixelFlipping(pixels_per_step=8)(model, x, 0, attribution)
    assert_unchanged(model, before)
    assert torch.allclose(trained, xk.metrics.PixelFlipping(pixels_per_step=8)(model.eval(), x, 0, attribution))


def test_non_differentiable_model_is_explained_clearly():
    class Rounded(nn.Module):
        def forward(self, x):
            with torch.no_grad():
                return x.round()

    with pytest.raises(ValueError, match="does not depend differentiably on x"):
        xk.Gradient(Rounded().eval())(torch.randn(2, 3))


def test_target_specs():
    out = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    assert resolve_target(None, out).index.tolist() == [1, 0]
    assert resolve_target(2, out).score(out).tolist() == [2.0, 1.0]
    assert resolve_target([0, 2], out).score(out).tolist() == [1.0, 1.0]
    assert resolve_target(torch.tensor([2, 1]), out).score(out).tolist() == [2.0, 0.0]
    assert resolve_target(lambda o: o.sum(1), out).score(out).tolist() == [6.0, 6.0]
    assert resolve_target(xk.Contrast(None, 2), out).score(out).tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match="callable target must return"):
        resolve_target(lambda o: o, out).score(out)


def test_explain_shortcut_and_registry(model):
    x = torch.randn(2, 8)
    a = xk.explain(model, x, 1, method="lrp", composite="epsilon").attribution
    b = xk.LRP(model, composite="epsilon")(x, target=1).attribution
    torch.testing.assert_close(a, b)
    assert xk.get_method("InputXGradient") is xk.InputXGradient
    with pytest.raises(ValueError, match="unknown method 'lrpp'"):
        xk.explain(model, x, method="lrpp")


def test_chunked_keeps_order_respects_cap_and_fixed_sizes():
    sizes = []

    def fn(start, stop):
        sizes.append(stop - start)
        return list(range(start, stop))

    out = chunked(fn, 37, "auto", cap=4)
    assert sum(out, []) == list(range(37))
    assert max(sizes) <= 4
    sizes.clear()
    assert sum(chunked(fn, 10, 3), []) == list(range(10))
    assert sizes == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive int"):
        chunked(fn, 3, 0)


def test_batched_forward_gives_each_row_its_samples_extra_inputs():
    class Scaled(nn.Module):
        def forward(self, x, scale):
            return x * scale

    x = torch.arange(6.0).reshape(6, 1)
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    scale = torch.tensor([[1.0], [10.0], [100.0]])
    out = batched_forward(Scaled(), x, 4, owner=owner, batch=3, forward_kwargs={"scale": scale})
    assert out[:, 0].tolist() == [0.0, 1.0, 20.0, 30.0, 400.0, 500.0]
    assert select_batch({"a": scale, "b": 3}, torch.tensor([2]), 3)["a"].tolist() == [[100.0]]


class _NaNFor(nn.Module):
    """A linear model whose output is NaN wherever feature ``index`` is exactly ``value``."""

    def __init__(self, index: int = 0, value: float | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.index, self.value = index, value

    def forward(self, x):
        out = self.linear(x)
        if self.value is None:
            return out * torch.nan
        poisoned = (x[:, self.index] == self.value)[:, None]
        return torch.where(poisoned, torch.full_like(out, torch.nan), out)


@pytest.mark.parametrize("method", [
    lambda m: xk.LRP(m), lambda m: xk.Gradient(m), lambda m: xk.KernelSHAP(m, samples=16, seed=0),
    lambda m: xk.Occlusion(m, window=1),
])
def test_a_nan_output_to_explain_is_an_error(method):
    with pytest.raises(ValueError, match="output to explain is nan for sample"):
        method(_NaNFor().eval())(torch.randn(2, 4), target=0)


def test_nan_scores_of_perturbed_inputs_are_warned_about():
    model = _NaNFor(index=1, value=0.0).eval()  # the zero baseline of feature 1 gives NaN
    with pytest.warns(UserWarning, match="NaN or infinite scores on"):
        xk.Occlusion(model, window=1)(torch.ones(2, 4), target=0)


def test_chunked_auto_short_calls_go_on_from_where_the_search_got_and_run_the_rest_in_one_chunk(monkeypatch):
    """A call too short to end the search runs its rest as one chunk of the size reached, and the next call with
    the same key starts from the best size so far (not from 1): many short calls do not all run in tiny chunks."""
    import xaikit.batching as batching

    now = [0.0]
    monkeypatch.setattr(batching, "_clock", lambda: now[0])
    sizes = []

    def fn(start, stop):  # each call costs 1 + 0.1 per item: larger chunks are always faster per item
        sizes.append(stop - start)
        now[0] += 1 + 0.1 * (stop - start)
        return list(range(start, stop))

    key = ("test-short-calls", object())
    out = chunked(fn, 12, "auto", key=key, cap=64)
    assert sum(out, []) == list(range(12))
    assert sizes == [1, 1, 2, 4, 4]  # warm-up, then 1, 2, 4 each faster per item; size 8 reached: the last 4 at once
    sizes.clear()
    out = chunked(fn, 12, "auto", key=key, cap=64)
    assert sum(out, []) == list(range(12))
    assert sizes == [1, 4, 7]  # the warm-up, then on from size 4; size 8 reached: the last 7 at once
