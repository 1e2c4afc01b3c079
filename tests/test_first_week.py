"""The traps a new user fell into on their own data (issue 32): each test failed before its fix."""
import warnings

import numpy as np
import pytest
import torch

import xaikit as xk
from models import assert_unchanged, mlp, snapshot, vgg_like
from xaikit.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_csv(path, rows=12, features=8, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    lines = [",".join([f"f{i}" for i in range(features)] + ["label"])]
    lines += [",".join([f"{v:.4f}" for v in row] + [str(i % classes)]) for i, row in enumerate(x)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- 1. the default LRP on tabular models ------------------------------------------------------------------

def test_default_lrp_on_feature_vectors_is_gradient_times_input_not_constant():
    torch.manual_seed(0)
    model = mlp(bias=False).double().eval()
    x = torch.randn(5, 8, dtype=torch.float64)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default warns about nothing on a table
        expl = xk.LRP(model, epsilon=0.0)(x, target=1)
    assert_unchanged(model, before)
    assert expl.method == "LRP(epsilon_plus)"
    # a bias-free ReLU MLP under LRP-0 on every dense layer: exactly gradient × input (Montavon et al. 2019)
    reference = xk.InputXGradient(model)(x, target=1).attribution
    torch.testing.assert_close(expl.attribution, reference, rtol=1e-10, atol=1e-12)
    assert (expl.attribution.std(1) > 1e-3).all()  # features told apart


def test_flat_rule_on_a_dense_first_layer_is_constant_and_warns():
    torch.manual_seed(0)
    model = mlp().double().eval()
    x = torch.randn(4, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="same relevance"):
        expl = xk.LRP(model, composite="epsilon_plus_flat")(x, target=0)
    # what the warning is about: every feature of a row gets the row's mean relevance
    a = expl.attribution
    torch.testing.assert_close(a, a.mean(1, keepdim=True).expand_as(a))


def test_default_lrp_on_images_keeps_the_flat_first_layer_without_warning():
    torch.manual_seed(0)
    model = vgg_like().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        expl = xk.LRP(model)(torch.rand(2, 3, 16, 16), target=0)
    assert expl.method == "LRP(epsilon_plus_flat)"
    assert expl.info["coverage"]["handled"].get("conv2d:flat") == 1


def test_auto_composite_checks_its_settings_at_build_time():
    with pytest.raises(TypeError, match="gamma"):
        xk.LRP(mlp(), gamma=0.5)


def test_cli_explain_csv_default_lrp_tells_features_apart(capsys, tmp_path):
    csv = table_csv(tmp_path / "t.csv")
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", csv, "--target-column", "label",
                       "--methods", "lrp", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    assert "LRP(epsilon_plus)" in arrays.files
    a = arrays["LRP(epsilon_plus)"]
    assert a.shape == (12, 8) and (a.std(1) > 1e-6).all()
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", csv, "--target-column", "label",
                       "--methods", "lrp:composite=epsilon_plus_flat", "--out", tmp_path / "f", "-q")
    assert code == 0 and "same relevance" in err


# ---- 4. the tune budget must let candidates be compared --------------------------------------------------------

def test_tune_refuses_a_budget_that_scores_one_configuration():
    from test_tune import PF, _linear_task, _Synthetic

    model, x, y = _linear_task()  # 12 samples, 49 configurations; rungs 4 -> 12
    need = xk.tune.min_budget(12, 2, min_samples=4, eta=3)
    assert need == -(-(2 * 4 + 1 * 8) * 10 // 7)  # two on the first rung, one goes on: 16 evaluations / 0.7
    with pytest.raises(ValueError, match=f"cannot compare candidates; give budget >= {need}"):
        xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=need - 1)
    result = xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=need)
    assert len(result.candidates) >= 2 and result.evaluations <= need


def test_cli_tune_default_budget_compares_eta_squared_configurations(capsys, tmp_path):
    from test_tune import TINY

    (tmp_path / "tiny_model.py").write_text(TINY)
    out = tmp_path / "out"
    argv = ["tune", "-m", f"{tmp_path / 'tiny_model.py'}:tiny", "-i", "ground-truth", "--num-samples", "8",
            "--groups", "2", "--gamma", "0", "0.25", "1", "--out", str(out), "--objectives",
            "pixel_flipping:pixels_per_step=128", "--presets", "epsilon"]
    assert main(argv) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    tried = len((out / "table.csv").read_text().strip().splitlines()) - 1
    assert tried == 9 and "9 of 9 configurations tried" in stdout  # 3 γ × 3 γ, all drawn for the first rung


# ---- 5. scikit-learn models on the command line --------------------------------------------------------------

FOREST = """
import numpy as np
from sklearn.linear_model import LogisticRegression
import xaikit as xk

def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    return x, (x[:, 0] + 2 * x[:, 3] > 0).astype(int)

def logistic():
    return LogisticRegression().fit(*data())

def wrapped():
    return xk.NumpyModel(logistic().predict_proba)
"""


def test_cli_explains_a_scikit_learn_model_with_the_model_agnostic_methods(capsys, tmp_path):
    import importlib.util

    (tmp_path / "sk.py").write_text(FOREST)
    csv = table_csv(tmp_path / "t.csv", rows=4, classes=2)
    spec = importlib.util.spec_from_file_location("sk_check", tmp_path / "sk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    proba = module.logistic().predict_proba
    for factory in ("logistic", "wrapped"):
        code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'sk.py'}:{factory}", "-i", csv,
                           "--target-column", "label", "--methods", "occlusion", "--out", tmp_path / factory, "-q")
        assert code == 0, err
        arrays = np.load(tmp_path / factory / "attributions.npz")
        x, rows, labels = arrays["inputs"].astype(np.float64), np.arange(4), np.arange(4) % 2
        # occlusion of one feature by 0: p(x) - p(x with that feature 0), computed here from the estimator
        expected = np.stack([proba(x)[rows, labels] - proba(np.where(np.eye(8)[j] == 1, 0.0, x))[rows, labels]
                             for j in range(8)], 1)
        np.testing.assert_allclose(arrays["Occlusion"], expected, atol=1e-5)
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'sk.py'}:logistic", "-i", csv, "--target-column",
                       "label", "--methods", "lrp", "gradient", "--out", tmp_path / "bad", "-q")
    assert code == 2
    assert "lrp, gradient need a torch.nn.Module" in err and "scikit-learn LogisticRegression" in err
    assert "kernel_shap" in err


# ---- 3. one progress convention: a bar on a terminal, summary lines in logs -------------------------------------

def test_progress_off_a_terminal_prints_periodic_summaries_with_time_left(monkeypatch):
    import io

    from xaikit import progress as P

    log = io.StringIO()  # not a terminal
    monkeypatch.setenv(P.INTERVAL_ENV, "0")
    with P.Progress(4, "work", "input", file=log) as bar:
        for _ in range(4):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"xaikit: work: {k}/4 inputs" for k in (1, 2, 3, 4, 4)]
    assert all("left" in line for line in lines[:3]) and lines[-1].endswith("(done)")
    assert "\r" not in log.getvalue()  # no bar redrawing in a log
    quiet = io.StringIO()
    with P.Progress(4, "work", file=quiet, enabled=False) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""
    monkeypatch.setenv(P.INTERVAL_ENV, "3600")
    short = io.StringIO()
    with P.Progress(4, "work", file=short) as bar:
        bar.update(4)
    assert short.getvalue() == ""  # a loop shorter than the interval says nothing
    # nested loops (a metric's stages) show progress only inside an outer one that does
    assert not P.nested(3, "inner").enabled
    with P.Progress(1, "outer", file=short):
        assert P.nested(3, "inner").enabled
    assert P.active() is None


def test_cli_explain_on_many_rows_prints_a_few_lines_and_bounded_figures(capsys, tmp_path, monkeypatch):
    from PIL import Image

    from xaikit import progress as P

    csv = table_csv(tmp_path / "t.csv", rows=60)
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", csv, "--target-column", "label",
                       "--methods", "gradient", "lrp", "--out", tmp_path / "o")
    assert code == 0, err
    assert len(err.splitlines()) <= 2, err  # 120 method calls in ~1 s: at most a final summary, not a line each
    # figures: 20 rows shown one by one (the issue: a 452 × 35,189 px image for 150 rows), all rows as a beeswarm
    assert Image.open(tmp_path / "o" / "features.png").size[1] < 2000
    width, height = Image.open(tmp_path / "o" / "summary-gradient.png").size
    assert height < 1000 and width < 1500
    monkeypatch.setenv(P.INTERVAL_ENV, "0")  # every update logged: the lines are summaries with counts
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", table_csv(tmp_path / "s.csv", rows=3),
                       "--target-column", "label", "--methods", "gradient", "--out", tmp_path / "p")
    assert code == 0 and err.splitlines()[0].startswith("xaikit: Gradient: 1/3 inputs, ")


def test_mprt_forecasts_its_time_inside_a_benchmark(monkeypatch):
    import io
    import sys

    from xaikit import progress as P

    monkeypatch.setenv(P.INTERVAL_ENV, "0")
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    torch.manual_seed(0)
    model = mlp().eval()
    x = torch.randn(3, 8)
    xk.metrics.benchmark(model, (x, torch.zeros(3, dtype=torch.long)), {"g": xk.Gradient(model)},
                         {"mprt": xk.metrics.MPRT()}, progress=True)
    text = log.getvalue()
    assert "MPRT on 3 sample(s), 3 layers: about" in text and "expected" in text
    assert "xaikit: MPRT stages: 1/3 layers" in text


# ---- 2. BiLRP neighbour heatmaps within the memory budget ----------------------------------------------------

def test_bilrp_heatmaps_are_chunked_under_the_memory_budget_with_equal_results():
    from xaikit.examples import FeatureIndex
    from xaikit.examples.index import HELD_PER_DIMENSION, heatmaps_plan

    torch.manual_seed(1)
    model = vgg_like(bias=False).double().eval()
    x = torch.rand(10, 3, 16, 16, dtype=torch.float64)
    index = FeatureIndex(model, layer="9", metric="cosine").fit(x)             # 32 feature dimensions
    nb = index.neighbours(x[:2], k=3)
    per_dimension = (2 + 6) * 3 * 16 * 16 * 8 * HELD_PER_DIMENSION               # samples × input bytes × held
    try:
        xk.set_memory_budget(1 << 30)
        whole = index.heatmaps(x[:2], nb, method="lrp:composite=zero")
        assert whole.info["memory"]["chunks"] == 1 and whole.info["memory"]["bytes_per_dimension"] == per_dimension
        xk.set_memory_budget(2 * 5 * per_dimension)                              # half the budget: 5 dimensions
        plan = heatmaps_plan(x[:2], 6, 32)
        assert (plan["chunk"], plan["chunks"]) == (5, 7) and plan["bytes"] <= plan["budget"] // 2
        chunked = index.heatmaps(x[:2], nb, method="lrp:composite=zero")
        assert chunked.info["memory"]["chunks"] == 7
        torch.testing.assert_close(chunked.query, whole.query, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(chunked.neighbour, whole.neighbour, rtol=1e-10, atol=1e-12)
        xk.set_memory_budget(per_dimension)                                      # not even one dimension fits
        with pytest.raises(MemoryError, match="per embedding dimension.*xk.set_memory_budget"):
            index.heatmaps(x[:2], nb, method="lrp:composite=zero")
    finally:
        xk.set_memory_budget(None)


# ---- 8. docs and data out of step -----------------------------------------------------------------------------

def test_losses_take_the_pixel_masks_the_zoo_data_sets_hold():
    data = xk.zoo.make_watermark_shapes(8, seed=0)
    assert data.mask.shape == (8, 32, 32)  # (N, H, W), as the localisation metrics read them
    torch.manual_seed(0)
    model = xk.zoo.ShapesCNN(4).eval()
    x, y = data.x, data.y
    per_pixel = xk.improve.rrr_penalty(model, x, ~data.mask, y)
    per_channel = xk.improve.rrr_penalty(model, x, ~data.mask[:, None], y)
    torch.testing.assert_close(per_pixel, per_channel)
    with pytest.raises(ValueError, match="give one mask per sample"):
        xk.improve.rrr_penalty(model, x, ~data.mask[:4], y)


def test_composition_describe_names_the_sample_of_each_line():
    torch.manual_seed(0)
    model = vgg_like().eval()
    x = torch.rand(2, 3, 16, 16)
    top = xk.concepts.Composition(model, "3", top=2)(x, target=0)
    lines = top.describe()
    assert len(lines) == 4 and [line.split(":")[0] for line in lines] == ["sample 0"] * 2 + ["sample 1"] * 2
    one = xk.concepts.Composition(model, "3", top=2)(x[:1], target=0).describe()
    assert one[0].startswith("channel ")


def test_cli_summary_json_keeps_kernelshap_features(capsys, tmp_path):
    import json

    csv = table_csv(tmp_path / "t.csv", rows=2)
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", csv, "--target-column", "label", "--methods",
                       "kernel_shap:samples=40,estimator=plain", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    method = json.loads((tmp_path / "o" / "summary.json").read_text())["methods"]["KernelSHAP"]
    assert method["features"]["per_input"] == 8 and len(method["convergence_delta"]) == 2
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    assert arrays["KernelSHAP/feature_attribution"].shape == (2, 8)
    assert len(np.unique(arrays["KernelSHAP/features"].reshape(2, 8)[0])) == 8


# ---- 9. cost surprises -------------------------------------------------------------------------------------------

def test_cli_help_imports_no_torch_heavy_room():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, xaikit.cli\nxaikit.cli.build_parser()\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'xaikit.methods', 'xaikit.concepts', 'xaikit.viz', "
            "'xaikit.cli.commands') if m in sys.modules))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src},
                         check=True).stdout
    assert out.strip() == "[]"
    # the API is still all there on first use
    assert xk.LRP.__name__ == "LRP" and "LRP" in xk.__all__ and xk.metrics.METRICS


def test_evaluate_scores_do_not_depend_on_batch_mates():
    """Maps computed one sample per chunk or all in one differ by rounding (another kernel per batch size);
    ranking them must not reorder values equal in exact arithmetic, or a score depends on the batch mates."""
    from xaikit.metrics.pixels import stable_order

    model = vgg_like().eval()
    for seed, method in ((2, "grad_cam"), (0, "grad_cam")):  # the first reordered tied pixels of a sample on AVX2
        torch.manual_seed(seed)
        x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 5
        alone = xk.resolve_method(model, method, {"batch_size": 1})(x, y)
        together = xk.resolve_method(model, method, {"batch_size": 8})(x, y)
        a, b = alone.attribution.reshape(8, -1), together.attribution.reshape(8, -1)
        assert (a - b).abs().max() < 1e-6 * a.abs().max()  # rounding only
        torch.testing.assert_close(stable_order(a, True), stable_order(b, True), rtol=0, atol=0)
        metric = xk.metrics.PixelFlipping(pixels_per_step=16, batch_size=8)
        torch.testing.assert_close(metric(model, x, y, alone), metric(model, x, y, together), rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
    # whether rounding reorders these maps depends on the CPU's vector path (it did once on AVX2, not on SSE4.1):
    # the trap itself, on ties made by hand: cells repeated as upsampling does, moved by rounding-sized noise
    generator = torch.Generator().manual_seed(0)
    tied = torch.rand(8, 16, generator=generator).repeat_interleave(4, 1)
    rounded = tied + (torch.rand(tied.shape, generator=generator) - 0.5) * 1e-7
    plain = lambda s: torch.sort(s, dim=1, descending=True, stable=True).indices  # noqa: E731
    assert bool((plain(tied) != plain(rounded)).any())  # a plain ranking reorders the tied pixels ...
    torch.testing.assert_close(stable_order(tied, True), stable_order(rounded, True), rtol=0, atol=0)  # ... this not


# ---- 7. report sized by its inputs and honest about its models --------------------------------------------------

def test_report_defaults_are_sized_by_the_input_and_name_the_bundled_model(capsys, tmp_path, monkeypatch):
    from xaikit.cli import commands, parts

    photo = torch.zeros(1, 3, 224, 224)
    sized = commands.sized_for(list(parts.DEFAULT_EVAL_METHODS), photo)
    assert "occlusion:window=28,stride=14" in sized  # 15 × 15 = 225 occluded copies of a photo, not 12,321
    assert commands.sized_for(list(parts.DEFAULT_EVAL_METHODS), torch.zeros(1, 3, 32, 32)) == \
        list(parts.DEFAULT_EVAL_METHODS)
    # the heatmaps and the metrics table explain IG with the same number of steps
    steps = {xk.parse_spec(s)[1].get("steps") for s in (*parts.DEFAULT_IMAGE_METHODS, *parts.DEFAULT_EVAL_METHODS)
             if s.startswith("integrated_gradients")}
    assert steps == {16}
    monkeypatch.setattr(commands, "metrics_part", lambda args, out: commands.viz.note_section("Metrics", "skipped"))
    code, _, err = run(capsys, "report", "-m", "models:vgg_like", "-i", tmp_path, "--sections", "metrics",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert "score the bundled ground-truth-cnn, not models:vgg_like" in err
