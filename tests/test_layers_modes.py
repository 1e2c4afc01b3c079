"""The plumbing every room uses: layer lookup and one-call hooks (xaikit.layers), eval semantics and the training
flag (xaikit.modes)."""
import warnings

import pytest
import torch
from torch import nn

import xaikit.errors
from models import assert_unchanged, snapshot
import xaikit as xk
from xaikit.layers import Hooks, capture, find_layer, find_layers, first_tensor, hooked, last_layer, last_of_type
from xaikit.propagation.record import Recorder
from xaikit.modes import FollowsModel, eval_semantics, explains_in_eval, kept_flags


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _x(n=2):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# -- lookup ------------------------------------------------------------------------------------------------------
def test_find_layer_by_name_or_module():
    model = _model()
    assert find_layer(model, "2") == ("2", model[2])
    assert find_layer(model, model[4]) == ("4", model[4])
    assert find_layer(model, model) == ("", model)  # the model itself, given as a module
    assert list(find_layers(model, ["4", model[0]])) == ["4", "0"]
    assert find_layers(model, "1") == {"1": model[1]}


def test_an_unknown_layer_names_it_the_close_names_and_the_valid_names():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    model.add_module("head", nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"^cav\.layer 'featurs' is not a module of the model \(did you mean "
                                         r"'features' or .*\?\); valid names: features, features\.0, features\.1, "
                                         r"head$"):
        find_layer(model, "featurs", "cav.layer")
    with pytest.raises(ValueError, match="layers 'head2' is not a module"):
        find_layers(model, ["head", "head2"])
    assert find_layer(model, "") == ("", model)  # the root, named "" as in model.named_modules()
    with pytest.raises(ValueError, match="layer: the Linear given is not a sub-module of the model"):
        find_layer(model, nn.Linear(4, 2))
    with pytest.raises(TypeError, match="layer must be a module name"):
        find_layer(model, 3)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        find_layer(lambda x: x, "head")


def test_a_model_that_is_a_single_layer_is_its_own_layer():
    """Issue 30 (3): every name find_layer returns is accepted back (the model itself is ""), and the default
    layers of the rooms (last_layer, last_of_type: TracIn's last linear, Grad-CAM's last convolution) include
    the model itself."""
    model = _model()
    for name, module in model.named_modules():
        assert find_layer(model, name) == (name, module) == find_layer(model, module)
    linear, conv = nn.Linear(4, 3).eval(), nn.Conv2d(3, 2, 3)
    assert last_layer(linear) == ("", linear) and last_of_type(linear, nn.Linear) == ("", linear)
    assert last_of_type(model, (nn.Linear, nn.Conv2d)) == ("4", model[4])
    assert xk.GradCAM(conv).module is conv
    with pytest.raises(ValueError, match="no Conv1d, Conv2d, Conv3d to default to; pass layer="):
        last_of_type(linear, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    with Recorder(linear, [linear]) as rec:  # the model as the recorded layer: relevance at its output
        expl = xk.LRP(linear)(x, target=1)
    assert torch.allclose(rec[""].relevance, torch.nn.functional.one_hot(torch.tensor([1, 1]), 3) * expl.output)


def test_last_layer_is_the_last_module_with_parameters():
    model = _model()
    assert last_layer(model) == ("4", model[4])
    with pytest.raises(ValueError, match="no layer with parameters"):
        last_layer(nn.Sequential(nn.ReLU()))


def test_first_tensor():
    t = torch.zeros(1)
    assert first_tensor(t) is t and first_tensor((None, t)) is t and first_tensor({"a": t}) is None


# -- hooks -------------------------------------------------------------------------------------------------------
def test_hooks_are_removed_after_the_block_also_when_it_raises():
    model, x = _model().eval(), _x()
    before = snapshot(model)
    calls = []
    with pytest.raises(RuntimeError, match="boom"):
        with Hooks() as hooks:
            hooks.forward(model[0], lambda m, a, out: calls.append("forward"))
            hooks.pre(model, lambda m, a: calls.append("pre"))
            hooks.backward(model[4], lambda m, gi, go: calls.append("backward"))
            model(x).sum().backward()
            raise RuntimeError("boom")
    assert calls == ["pre", "forward", "backward"]
    model.zero_grad(set_to_none=True)
    assert_unchanged(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        with hooked(model[2], forward=lambda m, a, out: out * 0, pre=lambda m, a: None):
            assert torch.equal(model(x), model[4].bias.expand(2, -1))  # the ReLU's output zeroed in the block
            raise RuntimeError("boom")
    assert_unchanged(model, before)
    assert not torch.equal(model(x), model[4].bias.expand(2, -1))


def test_capture_outputs_inputs_and_stop():
    model, x = _model().eval(), _x(3)
    before = snapshot(model)
    with capture(model, "3") as outputs, capture(model, model[4], inputs=True) as inputs:
        out = model(x)
    assert outputs[0].shape == (3, 144) and torch.equal(outputs[0], inputs[0])
    assert out.requires_grad and outputs[0].requires_grad  # the graph is kept
    with capture(model, "2", stop=True) as seen:
        model(x)
        raise AssertionError("not reached: the forward pass stops at the layer")
    assert seen[0].shape == (3, 4, 6, 6)
    with pytest.raises(RuntimeError, match="boom"), capture(model, "2", stop=True):
        raise RuntimeError("boom")  # other errors pass through
    assert_unchanged(model, before)

    class Pair(nn.Module):
        def forward(self, x):
            return {"a": x}

    wrapped = nn.Sequential(Pair())
    with pytest.raises(TypeError, match="layer '0': it returns dict without a tensor"), capture(wrapped, "0"):
        wrapped(x)
    assert not wrapped[0]._forward_hooks


# -- eval semantics and the training flag -------------------------------------------------------------------------
def _mixed():
    model = _model().train()
    model[1].eval()  # a frozen BatchNorm: mixed flags
    return model


def test_eval_semantics_restores_every_flag_also_when_the_body_raises():
    model = _mixed()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="model is in training mode"), pytest.raises(RuntimeError, match="boom"):
        with eval_semantics(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert_unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with eval_semantics(model, warn=False):  # an opt-in caller: no warning
            model(_x())
        with eval_semantics(model.eval()):  # a model in eval mode: nothing to say
            pass
    with pytest.warns(DeprecationWarning, match="xaikit.modes.eval_semantics"):
        assert xaikit.errors.eval_semantics is eval_semantics  # still importable from errors, for one release
    with pytest.warns(DeprecationWarning, match="xaikit.modes.explains_in_eval"):
        assert xaikit.errors.explains_in_eval is explains_in_eval


def test_kept_flags_restores_flags_changed_in_the_body():
    model = _mixed()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), kept_flags(model):
        model.eval()
        raise RuntimeError("boom")
    assert_unchanged(model, before)


def test_a_wrapper_follows_the_models_flag_without_writing_it():
    class Wrapper(FollowsModel, nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model  # no self.train(model.training): that would write every flag of the model

        def forward(self, x):
            return self.model(x)

    model = _mixed()
    before = snapshot(model)
    wrapper = Wrapper(model)
    assert_unchanged(model, before)
    assert wrapper.training is True
    model.eval()
    assert wrapper.training is False


def test_the_recorder_takes_modules_and_keys_its_records_by_name():
    import xaikit as xk
    from xaikit.propagation.record import Recorder

    model, x = _model().eval(), _x()
    with Recorder(model, [model[2]]) as by_module, Recorder(model, ["2"]) as by_name:
        xk.LRP(model, composite="epsilon")(x, target=0)
    torch.testing.assert_close(by_module["2"].relevance, by_name["2"].relevance)
    with pytest.raises(ValueError, match="masks 'nope' is not a module"):
        Recorder(model, [], masks={"nope": torch.ones(1, 4)})
