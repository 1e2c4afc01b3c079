"""The method registry: built-ins registered explicitly, user methods only through ``xk.register_method``, and a
name collision refused (a user's ``class LRP(xk.Method)`` must not replace the built-in anywhere)."""
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.cli.specs import build_methods
from xaikit.concepts.base import make_method
from xaikit.explanation import Explanation
from xaikit.methods import base
from xaikit.metrics import base as metrics_base
from xaikit.tune import MethodSpace

BUILT_IN = {
    "deconv_net": xk.DeconvNet, "exact_shapley": xk.ExactShapley, "excitation_backprop": xk.ExcitationBackprop,
    "grad_cam": xk.GradCAM, "grad_cam_plus_plus": xk.GradCAMPlusPlus, "gradient": xk.Gradient,
    "guided_backprop": xk.GuidedBackprop, "input_x_gradient": xk.InputXGradient,
    "integrated_gradients": xk.IntegratedGradients, "kernel_shap": xk.KernelSHAP, "lime": xk.LIME, "lrp": xk.LRP,
    "meaningful_perturbation": xk.MeaningfulPerturbation, "occlusion": xk.Occlusion,
    "permutation_shapley": xk.PermutationShapley, "rise": xk.RISE, "smooth_grad": xk.SmoothGrad,
    "deep_lift": xk.DeepLift, "deep_lift_shap": xk.DeepLiftShap, "gradient_shap": xk.GradientShap,
    "smooth_grad_squared": xk.SmoothGradSquared, "var_grad": xk.VarGrad,
    "layer_gradient_x_activation": xk.LayerGradientXActivation, "layer_conductance": xk.LayerConductance,
    "neuron_attribution": xk.NeuronAttribution,
}


@pytest.fixture(autouse=True)
def _restore_registry():
    """Each test leaves the registry as it found it (tests run in random order)."""
    before = {registry: dict(registry._classes) for registry in (base.REGISTRY, metrics_base.REGISTRY)}
    yield
    for registry, classes in before.items():
        registry._classes.clear()
        registry._classes.update(classes)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 3)).eval()


class _Scaled(xk.Method):
    """Gradient × input times ``scale`` (a user's method with one setting)."""

    def __init__(self, model, scale: float = 1.0) -> None:
        super().__init__(model)
        self.scale = scale

    def explain(self, x, target, forward_args, forward_kwargs):
        return Explanation(self.scale * xk.InputXGradient(self.model)(x, target).attribution, target, None,
                           "scaled", {})


def test_built_ins_are_registered_under_their_snake_case_names():
    assert dict(xk.METHODS) == BUILT_IN
    for name, cls in BUILT_IN.items():
        assert xk.get_method(name) is cls and xk.get_method(cls.__name__) is cls


def test_a_user_class_named_like_a_built_in_does_not_replace_it(model):
    class LRP(xk.Method):  # noqa: F811 - the user's own LRP, on purpose
        def explain(self, x, target, forward_args, forward_kwargs):
            raise AssertionError("the user's class must not be picked by name")

    class Gradient(xk.Gradient):
        pass

    assert xk.get_method("lrp") is xk.LRP and xk.get_method("LRP") is xk.LRP
    assert xk.get_method("gradient") is xk.Gradient
    x = torch.randn(2, 6)
    torch.testing.assert_close(xk.explain(model, x, 1, method="lrp", composite="epsilon").attribution,
                               xk.LRP(model, composite="epsilon")(x, 1).attribution)
    # the rooms that choose a method by name get the built-in too
    assert [type(m) for m in build_methods(["lrp"], model, "auto", None).values()] == [xk.LRP]
    assert type(make_method(model, "lrp", None)) is xk.LRP
    assert MethodSpace("lrp", composite=["epsilon"]).cls is xk.LRP


def test_a_user_subclass_is_not_registered_by_subclassing():
    class MyMethod(xk.Method):
        pass

    assert "my_method" not in xk.METHODS
    with pytest.raises(ValueError, match=r"unknown method 'my_method'.*xk\.register_method"):
        xk.get_method("my_method")


def test_register_refuses_a_name_taken_by_another_class():
    class LRP(xk.Method):
        pass

    with pytest.raises(ValueError, match=r"'lrp' is already registered to xaikit\.methods\.propagation\.LRP.*name="):
        xk.register_method(LRP)
    with pytest.raises(ValueError, match=r"'gradient' is already registered to xaikit\.methods\.gradient\.Gradient"):
        xk.register_method(_Scaled, name="gradient")
    assert xk.get_method("lrp") is xk.LRP and xk.get_method("gradient") is xk.Gradient
    # a refused registration leaves nothing behind
    assert dict(xk.METHODS) == BUILT_IN


def test_register_under_a_new_name_reaches_explain_the_cli_and_tune(model):
    assert xk.register_method(_Scaled, name="scaled") is _Scaled
    assert xk.get_method("scaled") is _Scaled and xk.METHODS["scaled"] is _Scaled
    x = torch.randn(2, 6)
    reference = xk.InputXGradient(model)(x, 1).attribution
    torch.testing.assert_close(xk.explain(model, x, 1, method="scaled", scale=2.0).attribution, 2 * reference)
    (built,) = build_methods(["scaled:scale=3.0"], model, "auto", None).values()
    torch.testing.assert_close(built(x, 1).attribution, 3 * reference)
    assert MethodSpace("scaled", scale=[1.0, 2.0]).cls is _Scaled
    # the same class again under the same name is not a collision; under a second name it is an alias
    xk.register_method(_Scaled, name="scaled")
    xk.register_method(_Scaled, name="scaled_again")
    assert xk.get_method("scaled_again") is _Scaled


def test_register_as_a_decorator_with_and_without_a_name():
    @xk.register_method
    class Doubled(_Scaled):
        pass

    @xk.register_method(name="tripled")
    class Other(_Scaled):
        pass

    assert xk.get_method("doubled") is Doubled and xk.get_method("Doubled") is Doubled
    assert xk.get_method("tripled") is Other and "other" not in xk.METHODS


def test_redefining_the_same_class_replaces_it():
    """Re-running a notebook cell defines a new class object with the same module and qualified name."""
    classes = []
    for _ in range(2):
        class Rerun(_Scaled):
            pass

        classes.append(xk.register_method(Rerun))
    assert classes[0] is not classes[1] and xk.get_method("rerun") is classes[1]


def test_register_checks_its_arguments():
    with pytest.raises(TypeError, match="register_method takes a subclass of xaikit.Method, got int"):
        xk.register_method(3)
    with pytest.raises(TypeError, match="subclass of xaikit.Method.*BiLRP"):
        xk.register_method(xk.BiLRP)
    for bad in ("", "My Method", "lrp:composite", "Scaled"):
        with pytest.raises(ValueError, match="method name must be lower-case letters, digits and underscores"):
            xk.register_method(_Scaled, name=bad)
    with pytest.raises(TypeError, match="name must be a string"):
        xk.register_method(_Scaled, name=3)
    assert dict(xk.METHODS) == BUILT_IN


def test_methods_is_a_read_only_view():
    with pytest.raises(TypeError):
        xk.METHODS["lrp"] = _Scaled
    assert xk.METHODS["lrp"] is xk.LRP
    xk.register_method(_Scaled, name="scaled")
    assert "scaled" in xk.METHODS  # a live view of the registry


def test_metrics_share_the_registry_a_user_metric_named_like_a_built_in_replaces_nothing():
    """The same defect for metrics: subclassing registered every public Metric, so a user's
    ``class PixelFlipping(Metric)`` replaced the built-in for the CLI, run and tune objectives."""
    built_in = xk.metrics.get_metric("pixel_flipping")

    class PixelFlipping(xk.metrics.Metric):  # noqa: F811 (a user's class of the same name)
        def compute(self, case):
            raise AssertionError("never called")

    assert xk.metrics.get_metric("pixel_flipping") is built_in
    assert xk.metrics.METRICS["pixel_flipping"] is built_in
    with pytest.raises(ValueError, match="'pixel_flipping' is already registered to "
                                         "xaikit.metrics.faithfulness.PixelFlipping"):
        xk.metrics.register_metric(PixelFlipping)
    assert xk.metrics.register_metric(PixelFlipping, name="my_pixel_flipping") is PixelFlipping
    assert xk.metrics.get_metric("my_pixel_flipping") is PixelFlipping
    with pytest.raises(TypeError, match="subclass of xaikit.Metric"):
        xk.metrics.register_metric(xk.LRP)
    with pytest.raises(TypeError):
        xk.metrics.METRICS["x"] = PixelFlipping  # a read-only view
