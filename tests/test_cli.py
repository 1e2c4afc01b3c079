"""The ``xaikit`` command line: every subcommand, inputs of each kind, and one-line errors with exit codes."""
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from models import mlp, vgg_like
from xaikit.cli import main
from xaikit.cli.inputs import image_tensor

SRC = Path(__file__).resolve().parents[1] / "src"
HAVE_METRICS = importlib.util.find_spec("xaikit.metrics") is not None


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def photos(tmp_path):
    """Two small PNG images in a folder."""
    from skimage import io as skio

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        skio.imsave(folder / f"{name}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), check_contrast=False)
    return folder


def vgg(seed=0):
    torch.manual_seed(seed)
    return vgg_like().eval()


def test_explain_images_matches_the_library_and_writes_heatmaps(capsys, tmp_path, photos):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", "--model", "models:vgg_like", "--inputs", photos, "--image-size", 16,
                            "--methods", "gradient", "lrp:composite=epsilon,epsilon=0.01", "--target", "1,3",
                            "--out", out)
    assert code == 0, err
    # no progress bar when stderr is not a terminal, and no summary line for a run shorter than the interval of
    # xaikit.progress (tests/test_first_week.py checks the lines of a longer one)
    assert err == ""
    assert "explained 2 input(s) with 2 method(s)" in stdout
    arrays = np.load(out / "attributions.npz")
    assert list(arrays["names"]) == ["a", "b"] and arrays["target"].tolist() == [1, 3]
    from skimage import io as skio

    x = torch.stack([image_tensor(skio.imread(photos / f"{n}.png"), 16, 0.0, 1.0) for n in "ab"])
    np.testing.assert_allclose(arrays["inputs"], x.numpy())
    model = vgg()
    expected = xk.Gradient(model)(x, torch.tensor([1, 3])).attribution
    np.testing.assert_allclose(arrays["Gradient"], expected.numpy(), rtol=1e-5, atol=1e-7)
    expected = xk.LRP(model, composite="epsilon", epsilon=0.01)(x, torch.tensor([1, 3])).attribution
    np.testing.assert_allclose(arrays["LRP(epsilon)"], expected.numpy(), rtol=1e-4, atol=1e-7)
    for name in "ab":
        assert sorted(p.name for p in (out / "heatmaps" / name).iterdir()) == ["gradient.png", "lrp-epsilon.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"][1]["explained"].startswith("class 3 p=")  # no names: "class 3", not "class 3 (3)"
    assert summary["settings"]["seed"] == 0 and (out / "grid.png").is_file()


def test_explain_batch_size_and_seed(capsys, tmp_path, photos):
    def attribution(*extra):
        out = tmp_path / "_".join(map(str, extra))
        code, _, err = run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, photos, "--image-size", 16,
                           "--methods", "input_x_gradient", "--out", out, *extra)
        assert code == 0, err
        return np.load(out / "attributions.npz")["InputXGradient"]

    reference = attribution("--batch-size", "1")
    np.testing.assert_allclose(attribution("--batch-size", "3"), reference, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attribution("--batch-size", "auto"), reference, rtol=1e-5, atol=1e-7)
    # the seed fixes the random initialisation of the factory's model: same seed same result, other different
    assert not np.allclose(attribution("--seed", "1"), reference)
    np.testing.assert_array_equal(attribution("--seed", "1"), attribution("--seed", "1", "--quiet"))
    threads = torch.get_num_threads()
    np.testing.assert_allclose(attribution("--threads", "1"), reference, rtol=1e-5, atol=1e-7)
    assert torch.get_num_threads() == threads  # restored after the run


def test_explain_csv_with_labels_and_npz_inputs(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    labels = [0, 2, 1, 1, 0]
    csv = tmp_path / "table.csv"
    csv.write_text("\n".join([",".join([f"f{i}" for i in range(4)] + ["label"] + [f"f{i}" for i in range(4, 8)])]
                             + [",".join(map(str, [*row[:4], y, *row[4:]])) for row, y in zip(x, labels)]))
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", csv, "--target-column", "label",
                       "--methods", "gradient", "--out", tmp_path / "csv")
    assert code == 0, err
    arrays = np.load(tmp_path / "csv" / "attributions.npz")
    assert arrays["target"].tolist() == labels
    torch.manual_seed(0)
    expected = xk.Gradient(mlp().eval())(torch.from_numpy(x), torch.tensor(labels)).attribution
    np.testing.assert_allclose(arrays["Gradient"], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "csv" / "features.png").is_file()

    np.savez(tmp_path / "data.npz", x=x, y=np.array(labels))
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", tmp_path / "data.npz", "--methods", "gradient",
                       "--out", tmp_path / "npz")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "npz" / "attributions.npz")["Gradient"], arrays["Gradient"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_explain_torchscript_and_state_dict_models(capsys, tmp_path, photos):
    model = vgg(seed=5)
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 16, 16)), tmp_path / "model.ts")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    results = []
    for spec in (["-m", tmp_path / "model.ts"], ["-m", "models:vgg_like", "--weights", tmp_path / "weights.pt"]):
        out = tmp_path / str(len(results))
        code, _, err = run(capsys, "explain", *spec, "-i", photos, "--image-size", 16, "--methods", "gradient",
                           "--out", out)
        assert code == 0, err
        results.append(np.load(out / "attributions.npz")["Gradient"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_progress_bar_with_eta_on_a_terminal(capsys, tmp_path, photos, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = main(["explain", "-m", "models:vgg_like", "-i", str(photos), "--image-size", "16", "--methods",
                 "gradient", "--out", str(tmp_path / "o")])
    assert code == 0
    assert "Gradient" in terminal.getvalue() and "2/2" in terminal.getvalue() and "<" in terminal.getvalue()


@pytest.mark.parametrize("argv, code, message", [
    (["explain", "-m", "models:vgg_like", "-i", "missing.png"], 3, "input 'missing.png' not found"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--methods", "nope"], 2, "unknown method 'nope'; valid: "),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--methods", "lrp:colour=red"], 2,
     "setting 'colour'"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--methods", "lrp:composite"], 2, "bad setting"),
    (["explain", "-m", "no_such_module:build", "-i", "{photos}"], 3,
     "cannot import 'no_such_module' for model 'no_such_module:build': ModuleNotFoundError"),
    (["explain", "-m", "models:no_such_factory", "-i", "{photos}"], 3, "'models' has no 'no_such_factory'"),
    (["explain", "-m", "missing_model.pt", "-i", "{photos}"], 3, "model 'missing_model.pt' not found"),
    (["explain", "-m", "{state_dict}", "-i", "{photos}"], 2, "is a state dict, not a model"),
    (["explain", "-m", "models:vgg_like", "--weights", "{state_dict}", "-i", "{photos}"], 2, "do not fit the model"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--batch-size", "0"], 2, "--batch-size: must be 'auto'"),
    (["explain", "-i", "{photos}"], 2, "the following arguments are required: --model"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--cmap", "nope"], 2, "unknown colour map 'nope'"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--percentile", "0"], 2, "--percentile: must be"),
    (["evaluate", "--text", "hello", "--methods", "gradient"], 2, "evaluate takes no --text inputs"),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "--image-size", "16", "--target", "9"], 1,
     "failed: ValueError: "),
    (["explain", "-m", "models:vgg_like", "-i", "{photos}", "{table}"], 2, "inputs mix image and tensor"),
    (["evaluate", "-i", "missing.npz", "--methods", "gradient"], 3, "input 'missing.npz' not found"),
    (["evaluate", "--methods", "nope"], 2, "unknown method 'nope'"),
    (["report", "--methods", "nope"], 2, "unknown method 'nope'"),
    (["report", "--sections", "pictures"], 2, "invalid choice: 'pictures'"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "give a command: explain, evaluate, report, run, tune, serve or improve"),
])
def test_bad_arguments_exit_non_zero_with_one_line(capsys, tmp_path, photos, argv, code, message):
    torch.save(mlp().state_dict(), tmp_path / "mlp.pt")
    (tmp_path / "table.csv").write_text("1,2\n3,4\n")
    values = {"{photos}": str(photos), "{state_dict}": str(tmp_path / "mlp.pt"), "{table}": str(tmp_path / "table.csv")}
    extra = ["--out", tmp_path / "out"] if argv and argv[0] in ("explain", "evaluate", "report") else []
    got, _, err = run(capsys, *[values.get(a, a) for a in argv], *extra)
    assert got == code, err
    assert message in one_line_error(err)


def test_unknown_metric_or_missing_metrics_part(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", "--methods", "gradient", "--metrics", "nope", "--out", tmp_path)
    line = one_line_error(err)
    if HAVE_METRICS:
        assert code == 2 and "unknown metric 'nope'; valid: " in line
    else:
        assert code == 4 and "metrics needs xaikit.metrics" in line


def test_no_cuda_is_a_usage_error(capsys, tmp_path, photos):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--device", "cuda", "--out", tmp_path)
    assert code == 2 and "no CUDA device is available" in one_line_error(err)


def test_report_on_a_small_model(capsys, tmp_path, photos):
    out = tmp_path / "report"
    code, stdout, err = run(capsys, "report", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
                            "--methods", "gradient", "guided_backprop", "--sections", "images", "--out", out)
    assert code == 0, err
    page = (out / "index.html").read_text()
    assert "Heatmaps: models:vgg_like" in page and page.count("<img") == 2 * 3 + 1
    assert "GuidedBackprop" in page and "xaikit report -m models:vgg_like" in page


@pytest.mark.skipif(HAVE_METRICS, reason="the metrics part is installed")
def test_report_says_which_part_is_missing_or_fails_when_strict(capsys, tmp_path):
    code, _, err = run(capsys, "report", "--sections", "metrics", "--out", tmp_path / "r")
    assert code == 0 and "metrics section left out" in one_line_error(err)
    assert "Not included: metrics needs xaikit.metrics" in (tmp_path / "r" / "index.html").read_text()
    code, _, err = run(capsys, "report", "--sections", "metrics", "--strict", "--out", tmp_path / "s")
    assert code == 4 and "metrics needs xaikit.metrics" in one_line_error(err)


@pytest.mark.skipif(not HAVE_METRICS, reason="needs xaikit.metrics")
def test_evaluate_writes_the_table(capsys, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = run(capsys, "evaluate", "--methods", "gradient", "lrp", "--num-samples", 4, "--out", out)
    assert code == 0, err
    assert (out / "scores.csv").is_file() and (out / "scores.md").is_file()
    assert json.loads((out / "scores.json").read_text())
    assert "Gradient" in stdout


def test_the_module_entry_point_runs_in_a_fresh_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{Path(__file__).parent}"}
    done = subprocess.run([sys.executable, "-m", "xaikit.cli", "explain", "-m", "no_such_module:f", "-i",
                           "skimage:chelsea"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 3 and "cannot import 'no_such_module'" in one_line_error(done.stderr)


def test_specs_parse_values_and_pass_seed_and_batch_size_where_taken():
    from xaikit.cli.errors import UsageError
    from xaikit.cli.specs import build_metrics, build_methods, parse_spec

    assert parse_spec("lrp:composite=epsilon_gamma_box,gamma=0.25,low=-3") == (
        "lrp", {"composite": "epsilon_gamma_box", "gamma": 0.25, "low": -3})
    assert parse_spec("occlusion:window=(8, 8),stride=4")[1] == {"window": (8, 8), "stride": 4}
    methods = build_methods(["gradient", "lrp:composite=epsilon", "lrp:composite=zero"], mlp(), 3, seed=7)
    assert list(methods) == ["Gradient", "LRP(epsilon)", "LRP(zero)"]
    assert methods["Gradient"].batch_size == 3

    class Spread:
        def __init__(self, bins: int = 4, seed: int | None = 0) -> None:
            self.bins, self.seed = bins, seed

    class Plain:
        def __init__(self) -> None:
            pass

    built = build_metrics(["spread:bins=8", "plain"], {"spread": Spread, "plain": Plain}, seed=5)
    assert list(built) == ["spread:bins=8", "plain"] and built["spread:bins=8"].seed == 5
    assert built["spread:bins=8"].bins == 8
    with pytest.raises(UsageError, match="unknown metric 'nope'; valid: plain, spread"):
        build_metrics(["nope"], {"spread": Spread, "plain": Plain})
    with pytest.raises(UsageError, match="metric 'plain:x=1'"):
        build_metrics(["plain:x=1"], {"plain": Plain})


@pytest.mark.skipif(importlib.util.find_spec("xaikit.zoo.text") is None or importlib.util.find_spec("xaikit.viz.text")
                    is None, reason="needs xaikit.zoo.text and xaikit.viz.text")
def test_explain_text_with_minilm(capsys, tmp_path):
    out = tmp_path / "text"
    code, _, err = run(capsys, "explain", "-m", "minilm", "--text", "a wonderful green garden", "--text",
                       "a dull movie", "--methods", "gradient", "lrp", "--out", out)
    assert code == 0, err
    arrays = np.load(out / "attributions.npz")
    assert arrays["Gradient"].shape[0] == 2 and arrays["inputs"].dtype.kind == "i"
    assert "LRP(attnlrp)" in arrays.files  # one default LRP composite for text, in the CLI as in the report
    page = (out / "index.html").read_text()
    assert "wonderful" in page and "Token heatmaps: minilm" in page
    summary = json.loads((out / "summary.json").read_text())  # the sentiment probe's answers make sense
    assert [i["explained"].split(" (")[0] for i in summary["inputs"]] == ["positive", "negative"]


# ---- issue 18: outputs checked first, user files kept, bad files named and skipped ------------------------------

def test_an_output_path_that_is_a_file_is_refused_before_any_work(capsys, tmp_path, photos):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    code, _, err = run(capsys, "explain", "-m", "no_such_module:f", "-i", photos, "--out", target)
    assert code == 2 and "--out" in one_line_error(err) and "is a file" in err  # before the model is imported
    assert target.read_text() == "mine"


def test_a_folder_of_user_files_is_never_written_into_and_stale_outputs_are_removed(capsys, tmp_path, photos):
    code, _, err = run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
                       "--methods", "gradient", "--out", photos)
    assert code == 2 and "already holds files xaikit did not write (a.png, b.png)" in one_line_error(err)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png"]
    out = tmp_path / "out"
    assert run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
               "--methods", "gradient", "--out", out)[0] == 0
    assert (out / "heatmaps" / "b" / "gradient.png").is_file()
    (photos / "b.png").unlink()  # the next run has one input less: its heatmaps must not stay behind
    assert run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
               "--methods", "gradient", "--out", out)[0] == 0
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["a"]


def test_outputs_written_into_the_input_folder_are_not_read_as_inputs(capsys, tmp_path, photos):
    inner = photos / "explained"
    assert run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
               "--methods", "gradient", "--out", inner)[0] == 0
    from xaikit.cli.outputs import finish_writing
    (inner / "extra.png").write_bytes((inner / "grid.png").read_bytes())
    finish_writing(inner)  # an xaikit output folder full of PNGs, given as the input folder
    code, _, err = run(capsys, "explain", "-m", "models:vgg_like", "-i", inner, "--image-size", 16,
                       "--methods", "gradient", "--out", tmp_path / "o")
    assert code == 3 and "holds no images" in one_line_error(err)


def test_a_bad_file_in_a_folder_is_skipped_with_a_message_and_a_gif_is_read(capsys, tmp_path, photos):
    from PIL import Image

    (photos / "broken.jpg").write_text("not an image")
    frames = [Image.fromarray(np.full((12, 10, 3), v, dtype=np.uint8)) for v in (30, 200)]
    frames[0].save(photos / "moving.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    code, _, err = run(capsys, "explain", "-m", "models:vgg_like", "-i", photos, "--image-size", 16,
                       "--methods", "gradient", "--out", out)
    assert code == 0, err
    assert "broken.jpg" in err and "skipped" in err
    assert list(np.load(out / "attributions.npz")["names"]) == ["a", "b", "moving"]


@pytest.mark.parametrize("content, message", [
    ("a,b,c\n1,2,3\n4,5\n", "line 3 has 2 values, the first (header) line 3"),
    ("a,b\n1,x\n", "line 2, column 'b' holds 'x', not a number"),
])
def test_csv_problems_are_named_by_line_and_column(capsys, tmp_path, content, message):
    (tmp_path / "t.csv").write_text(content)
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", tmp_path / "t.csv", "--out", tmp_path / "o")
    assert code == 2 and message in one_line_error(err)


def test_an_array_of_the_wrong_shape_is_named_before_any_work(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), dtype=np.float32))  # the mlp takes 8 features
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "-i", tmp_path / "x.npy", "--out", tmp_path / "o")
    line = one_line_error(err)
    assert code == 2 and "x.npy (one sample: shape (5,), torch.float32) do not fit the model 'models:mlp'" in line


def test_weights_errors_are_whole_sentences(capsys, tmp_path, photos):
    (tmp_path / "notanimage.jpg").write_text("x" * 20)
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "--weights", tmp_path / "notanimage.jpg",
                       "-i", photos, "--out", tmp_path / "o")
    assert code == 3 and "not a state dict saved with torch.save" in one_line_error(err)
    torch.save(vgg().state_dict(), tmp_path / "vgg.pt")
    code, _, err = run(capsys, "explain", "-m", "models:mlp", "--weights", tmp_path / "vgg.pt", "-i", photos,
                       "--out", tmp_path / "o")
    line = one_line_error(err)
    assert code == 2 and "do not fit the model" in line and "Missing key(s)" in line


def test_report_eval_inputs_honour_the_target_column(capsys, tmp_path):
    rows = ["f0,f1,f2,f3,f4,f5,f6,f7,label"] + [",".join(["0.5"] * 8 + [str(i % 3)]) for i in range(4)]
    (tmp_path / "wine.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "r"
    code, _, err = run(capsys, "report", "--sections", "metrics", "--eval-model", "models:mlp", "--eval-inputs",
                       tmp_path / "wine.csv", "--target-column", "label", "--eval-methods", "gradient",
                       "--metrics", "sparseness", "--strict", "--quiet", "--out", out)
    assert code == 0, err
    assert "| Gradient | **" in (out / "scores.md").read_text()  # the label column is not a feature


@pytest.mark.skipif(importlib.util.find_spec("xaikit.zoo.text") is None, reason="needs xaikit.zoo.text")
def test_text_beyond_lrp_skips_what_does_not_apply_and_fails_when_nothing_could_be_done(capsys, tmp_path):
    out = tmp_path / "text"
    code, _, err = run(capsys, "explain", "-m", "minilm", "--text", "a wonderful green garden", "--methods",
                       "integrated_gradients:steps=4", "occlusion", "kernel_shap:samples=32", "rise:masks=8",
                       "--quiet", "--out", out)
    assert code == 0, err
    assert "RISE skipped: RISE does not apply to token ids" in err
    arrays = np.load(out / "attributions.npz")
    assert {"IntegratedGradients(gauss_legendre, 4)", "Occlusion", "KernelSHAP"} <= set(arrays.files)
    assert "RISE" not in arrays.files
    assert arrays["Occlusion"].shape == arrays["inputs"].shape  # one value per token
    summary = json.loads((out / "summary.json").read_text())
    assert "[MASK]" not in json.dumps(summary) and summary["methods"]["Occlusion"]["tokens"] == \
        "masked with token id 103"  # the tokenizer's [MASK]
    code, _, err = run(capsys, "explain", "-m", "minilm", "--text", "a dull movie", "--methods", "rise:masks=8",
                       "--quiet", "--out", tmp_path / "none")
    assert code == 1 and "no method could explain the inputs (RISE: RISE does not apply" in err.splitlines()[-1]


def test_a_model_folder_that_cannot_be_loaded_is_named(capsys, tmp_path):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no_such_architecture"}')
    code, _, err = run(capsys, "explain", "-m", folder, "--text", "hello", "--out", tmp_path / "o")
    assert code == 3 and "cannot load a causal language model and its tokenizer from" in one_line_error(err)


def test_a_method_that_does_not_apply_still_completes_the_progress_bar(capsys, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = main(["explain", "-m", "minilm", "--text", "a good film", "--methods", "rise:masks=4", "gradient",
                 "--out", str(tmp_path / "o")])
    assert code == 0 and "RISE skipped" in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_report_sections_on_the_same_model_share_one_load(capsys, tmp_path, photos, monkeypatch):
    from xaikit.cli import commands

    loads = []
    original = commands.load_model
    monkeypatch.setattr(commands, "load_model", lambda spec, *a, **k: loads.append(spec) or original(spec, *a, **k))
    code, _, err = run(capsys, "report", "-m", "models:vgg_like", "-i", photos, "--image-size", 16, "--methods",
                       "gradient", "--sections", "images", "concepts", "--concept-layer", "3", "--quiet",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert loads == ["models:vgg_like"]
    assert "loaded" not in (tmp_path / "r" / "settings.json").read_text()


def test_explain_a_regressor_with_its_target_column(capsys, tmp_path):
    """A one-output model is a regressor: --target-column holds its true values (not class labels), no --target
    0 is needed, and the prediction, the true value and each method's base value are written."""
    (tmp_path / "reg.py").write_text(
        "import torch\nfrom torch import nn\n\ndef regressor():\n    model = nn.Linear(3, 1)\n"
        "    with torch.no_grad():\n        model.weight.copy_(torch.tensor([[2.0, -1.0, 0.5]]))\n"
        "        model.bias.fill_(150.0)\n    return model\n\ndef classifier():\n    return nn.Linear(3, 2)\n")
    rows = [[0.5, 1.0, -2.0, 151.5], [1.0, 0.0, 2.0, 149.0], [-1.0, 2.0, 0.0, 151.0]]
    (tmp_path / "diabetes.csv").write_text("a,b,c,progression\n" + "\n".join(",".join(map(str, r)) for r in rows))
    code, out, err = run(capsys, "explain", "-m", f"{tmp_path / 'reg.py'}:regressor", "-i", tmp_path / "diabetes.csv",
                         "--target-column", "progression", "--methods", "input_x_gradient", "integrated_gradients",
                         "--out", tmp_path / "o")
    assert code == 0, err
    assert "predictions.csv" in out
    x = torch.tensor([r[:3] for r in rows])
    w = torch.tensor([2.0, -1.0, 0.5])
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    np.testing.assert_allclose(arrays["InputXGradient"], (w * x).numpy(), rtol=1e-6)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    for row, given, first in zip(summary["inputs"], rows, (w * x).sum(1) + 150):
        assert row["prediction"] == pytest.approx(float(first)) and row["true value"] == given[3]
        assert row["base value"] == {"InputXGradient": 150.0, "IntegratedGradients(gauss_legendre, 32)": 150.0}
        assert row["relevance sum"]["InputXGradient"] == pytest.approx(row["prediction"] - 150.0, abs=1e-4)
        start = f"prediction {row['prediction']:.4g} (true {given[3]:.4g}), base value 150"
        assert row["explained"].startswith(start)
    table = (tmp_path / "o" / "predictions.csv").read_text().splitlines()
    assert table[0].startswith("input,prediction,true value,InputXGradient base value") and len(table) == 4
    # a classifier's --target-column must hold class indices
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'reg.py'}:classifier", "-i", tmp_path / "diabetes.csv",
                       "--target-column", "progression", "--methods", "gradient", "--out", tmp_path / "c")
    assert code != 0 and "--target-column 'progression' holds values that are not class indices" in err


def test_explain_a_region_of_a_segmentation_output(capsys, tmp_path, photos):
    """--target CLS@box=... explains the sum of class CLS's output map over the box, as the library does."""
    (tmp_path / "seg.py").write_text(
        "import torch\nfrom torch import nn\n\ndef segmenter():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))\n")
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'seg.py'}:segmenter", "-i", photos, "--image-size", 16,
                       "--methods", "gradient", "--target", "1@box=2,3,8,12", "--out", tmp_path / "o")
    assert code == 0, err
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.from_numpy(arrays["inputs"])
    expected = xk.Gradient(model)(x, lambda out: out[:, 1, 2:8, 3:12].flatten(1).sum(1)).attribution
    np.testing.assert_allclose(arrays["Gradient"], expected.numpy(), rtol=1e-5, atol=1e-7)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["inputs"][0]["explained"] == "class 1: box=(2, 3, 8, 12)"
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'seg.py'}:segmenter", "-i", photos, "--image-size", 16,
                       "--methods", "gradient", "--target", "1@box=2,x", "--out", tmp_path / "bad")
    assert code == 2 and "--target '1@box=2,x'" in one_line_error(err)


def test_explain_reads_wav_audio(capsys, tmp_path):
    from scipy.io import wavfile

    rate = 8000
    samples = (np.sin(2 * np.pi * 440 * np.arange(800) / rate) * 16000).astype(np.int16)
    wavfile.write(tmp_path / "tone.wav", rate, np.stack([samples, samples // 2], 1))
    (tmp_path / "audio.py").write_text(
        "import torch\nfrom torch import nn\n\ndef model():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv1d(2, 4, 9), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), "
        "nn.Linear(4, 3))\n")
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'audio.py'}:model", "-i", tmp_path / "tone.wav",
                       "--methods", "input_x_gradient", "--out", tmp_path / "o")
    assert code == 0, err
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    assert arrays["inputs"].shape == (1, 2, 800)
    np.testing.assert_allclose(arrays["inputs"][0, 0], samples / 32768, atol=1e-6)
    np.testing.assert_allclose(arrays["inputs"][0, 1], (samples // 2) / 32768, atol=1e-6)


def test_explain_a_signal_in_the_stft_view(capsys, tmp_path):
    """--view stft: the attributions are shaped like the STFT's coefficients, LRP's total equals the time-domain
    LRP's (the virtual layer conserves), the gradient runs on the coefficients, a figure per method and input."""
    (tmp_path / "audio.py").write_text(
        "import torch\nfrom torch import nn\n\ndef model():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv1d(1, 4, 9), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), "
        "nn.Linear(4, 3)).eval()\n")
    x = np.random.default_rng(0).standard_normal((1, 1, 256)).astype(np.float32)
    np.save(tmp_path / "signals.npy", x)
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'audio.py'}:model", "-i", tmp_path / "signals.npy",
                       "--methods", "lrp:composite=epsilon", "gradient", "--view", "stft", "--out", tmp_path / "o")
    assert code == 0, err
    arrays = np.load(tmp_path / "o" / "attributions.npz")
    labels = [key for key in arrays.files if key not in ("inputs", "names", "target")]
    assert len(labels) == 2 and all(arrays[k].shape == (1, 1, 2, 129, 5) for k in labels)  # STFT(256, hop 64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 9), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    signals = torch.from_numpy(x)
    target = model(signals).argmax(1)
    time_domain = xk.resolve_method(model, "lrp:composite=epsilon")(signals, target).attribution
    lrp = next(k for k in labels if k.startswith("LRP"))
    np.testing.assert_allclose(arrays[lrp].reshape(1, -1).sum(1), time_domain.flatten(1).sum(1).numpy(),
                               rtol=1e-4, atol=1e-6)
    assert len(list((tmp_path / "o").glob("signal-*.png"))) == 2
    table = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    np.save(tmp_path / "table.npy", table)
    code, _, err = run(capsys, "explain", "-m", f"{tmp_path / 'audio.py'}:model", "-i", tmp_path / "table.npy",
                       "--methods", "gradient", "--view", "dft", "--out", tmp_path / "bad")
    assert code == 2 and "--view needs signals (N, C, T)" in one_line_error(err)
