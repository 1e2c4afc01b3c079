"""Explanatory interactive learning's back end (xaikit.improve.revise): RRR on painted masks raises the decoy
digits' test accuracy, the original model is unchanged (also after a cancel or an error), the revision is repeated
from its saved files, P-ClArC projects the flagged direction, bad input is refused with clear errors."""
import threading

import numpy as np
import pytest
import torch

from models import assert_unchanged, snapshot
from xaikit.cav import activations
from xaikit.improve.revise import (Revise, RevisionCancelled, expand_masks, load_revision, repeat)
from xaikit.zoo import make_decoy_digits, train_decoy_mlp


@pytest.fixture(scope="module")
def decoy():
    torch.manual_seed(0)
    train, test = make_decoy_digits(0, n_train=400)
    model = train_decoy_mlp(0, epochs=10, data=train)
    return model, train, test


def corners() -> torch.Tensor:
    """The four 2×2 corners of the 12×12 canvas: where the decoy patches are (painted once, for every sample)."""
    mask = torch.zeros(12, 12)
    mask[:2, :2] = mask[:2, -2:] = mask[-2:, :2] = mask[-2:, -2:] = 1
    return mask


def test_rrr_on_painted_corners_raises_decoy_accuracy_and_keeps_the_model(decoy, tmp_path):
    model, train, test = decoy
    before = snapshot(model)
    steps = []
    result = Revise(model, "rrr", epochs=10)(train.x, train.y, corners(), evaluate={"decoy test": (test.x, test.y)},
                                              progress=lambda done, total, info: steps.append((done, total)))
    assert_unchanged(model, before)
    acc = result.accuracy["decoy test"]
    assert acc["before"] < 0.9  # the model reads the decoy patch ...
    assert acc["after"] > acc["before"] + 0.05  # ... and reads less of it after the revision
    assert steps[-1] == (10 * 7, 10 * 7) and [d for d, _ in steps] == list(range(1, 71))
    assert result.losses[-1]["penalty"] < result.losses[0]["penalty"]
    # the heatmaps of the shown samples hold less relevance in the corners after
    inside = lambda h: float((h.abs() * corners()).sum() / h.abs().sum())  # noqa: E731
    assert inside(result.heatmaps_after) < inside(result.heatmaps_before)
    rows = result.to_pandas()
    assert set(rows["set"]) == {"train", "decoy test"}

    # saved and repeated from the files: the same settings and masks give a model of the same accuracy
    folder = result.save(tmp_path / "revision", about={"data": {"kind": "decoy-digits", "seed": 0}})
    files = load_revision(folder)
    assert files.settings == result.settings and files.record["data"]["kind"] == "decoy-digits"
    torch.testing.assert_close(files.masks, result.masks)
    with torch.no_grad():
        torch.testing.assert_close(files.revised(model)(test.x), result.model(test.x))
    again = repeat(model, folder, train.x, train.y, evaluate={"decoy test": (test.x, test.y)})
    assert_unchanged(model, before)
    for name, values in result.accuracy.items():
        assert again.accuracy[name]["after"] == pytest.approx(values["after"], abs=2 / len(test.x))
    with torch.no_grad():
        agree = (again.model(test.x).argmax(1) == result.model(test.x).argmax(1)).float().mean()
    assert agree > 0.98


def test_cancel_stops_at_the_next_step_and_leaves_the_model(decoy):
    model, train, test = decoy
    before = snapshot(model)
    cancel, steps = threading.Event(), []

    def progress(done, total, info):
        steps.append(done)
        if done == 3:
            cancel.set()

    with pytest.raises(RevisionCancelled, match="cancelled"):
        Revise(model, epochs=50)(train.x, train.y, corners(), progress=progress, cancel=cancel)
    assert steps == [1, 2, 3]
    assert_unchanged(model, before)


def test_p_clarc_projects_the_flagged_direction(decoy, tmp_path):
    model, train, _ = decoy
    clean, _ = make_decoy_digits(0, n_train=400, decoy=False)
    x = torch.cat([train.x[:100], clean.x[100:200]])
    y = torch.cat([train.y[:100], clean.y[100:200]])
    artifact = torch.arange(200) < 100
    before = snapshot(model)
    result = Revise(model, "p_clarc", layer="2")(x, y, artifact=artifact)
    assert_unchanged(model, before)
    cav = result.cav
    # closed form of P-ClArC: every sample's activation along v equals the clean mean's
    with torch.no_grad():
        from xaikit.improve import project
        with project(result.model.model, cav):
            projected = activations(result.model.model, "2", x)
    along = projected.flatten(1) @ cav.direction.flatten()
    torch.testing.assert_close(along, (cav.clean_mean.flatten() @ cav.direction.flatten()).expand(200))
    folder = result.save(tmp_path / "clarc")
    files = load_revision(folder)
    assert files.artifact.tolist() == artifact.tolist() and files.masks is None
    again = repeat(model, folder, x, y)
    torch.testing.assert_close(again.cav.direction, cav.direction)
    with torch.no_grad():
        torch.testing.assert_close(files.revised(model)(x), result.model(x))


def test_mask_shapes_and_bad_input(decoy, tmp_path):
    model, train, _ = decoy
    x, y = train.x[:8], train.y[:8]
    one = corners()
    for given in (one, one[None], one[None, None], one.expand(8, 1, 12, 12), one.numpy()):
        assert torch.equal(expand_masks(given, x), one.expand(8, 1, 12, 12))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"masks has shape \(11, 12\) but x has \(8, 1, 12, 12\)"):
        Revise(model)(x, y, torch.zeros(11, 12))
    with pytest.raises(ValueError, match=r"masks has shape \(3, 1, 12, 12\)"):
        Revise(model)(x, y, torch.zeros(3, 1, 12, 12))
    with pytest.raises(ValueError, match="unknown strategy 'a_clarc'"):
        Revise(model, "a_clarc")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        Revise(model, method="nope")
    with pytest.raises(ValueError, match="does not support create_graph"):
        Revise(model, method="occlusion")
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        Revise(model, epoch=3)
    with pytest.raises(ValueError, match="needs layer="):
        Revise(model, "p_clarc")
    with pytest.raises(ValueError, match="needs masks"):
        Revise(model)(x, y)
    with pytest.raises(ValueError, match="needs artifact="):
        Revise(model, "p_clarc", layer="2")(x, y)
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        Revise(model)(x, y[:3], one)
    with pytest.raises(FileNotFoundError, match="not a saved revision"):
        load_revision(tmp_path)
    assert_unchanged(model, before)
    assert np.isfinite(Revise(model, epochs=1)(x, y, one).accuracy["train"]["after"])


def test_cli_improve_repeats_a_saved_revision(decoy, tmp_path, capsys):
    from xaikit.cli import main

    model, train, test = decoy
    (tmp_path / "factory.py").write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), "
                                         "nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 10))\n")
    torch.save(model.state_dict(), tmp_path / "base.pt")
    np.savez(tmp_path / "data.npz", x=train.x.numpy(), y=train.y.numpy(), x_test=test.x.numpy(), y_test=test.y.numpy())
    result = Revise(model, epochs=3)(train.x, train.y, corners(), evaluate={"test": (test.x, test.y)})
    folder = result.save(tmp_path / "rev", about={"model": f"{tmp_path / 'factory.py'}:make",
                                                  "data": {"kind": "npz", "path": str(tmp_path / "data.npz")}})
    code = main(["improve", str(folder), "--weights", str(tmp_path / "base.pt"), "-o", str(tmp_path / "again"), "-q"])
    assert code == 0, capsys.readouterr().err
    again = load_revision(tmp_path / "again")
    assert again.settings == result.settings and again.record["repeats"] == str(folder)
    for name in ("train", "test"):
        assert again.record["accuracy"][name]["before"] == pytest.approx(result.accuracy[name]["before"])
        assert again.record["accuracy"][name]["after"] == pytest.approx(result.accuracy[name]["after"],
                                                                        abs=2 / len(test.x))
    capsys.readouterr()
    assert main(["improve", str(tmp_path / "nowhere")]) == 3
    assert "not a saved revision" in capsys.readouterr().err
    assert main(["improve", str(folder), "--data", "bogus", "--weights", str(tmp_path / "base.pt")]) == 2
    assert "decoy-digits[:SEED], ground-truth[:SEED] or a .npz" in capsys.readouterr().err


def test_revision_data_specs(tmp_path):
    from xaikit.cli.errors import CLIError
    from xaikit.cli.improve_command import revision_data

    data = revision_data("decoy-digits:2")
    train, test = make_decoy_digits(2)
    assert torch.equal(data["x"], train.x) and torch.equal(data["evaluate"]["decoy test"][1], test.y)
    assert data["about"] == {"kind": "decoy-digits", "seed": 2}
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32), y=np.arange(3))
    assert revision_data(str(tmp_path / "d.npz"))["evaluate"] == {}
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4), np.float32))
    for spec, text in (("decoy-digits:x", "integer seed"), (str(tmp_path / "bad.npz"), "missing: y"),
                       ("photos/", "decoy-digits[:SEED], ground-truth[:SEED] or a .npz"), (str(tmp_path / "none.npz"), "not found")):
        with pytest.raises(CLIError, match=text.replace("[", r"\[").replace("]", r"\]")):
            revision_data(spec)
