"""``xaikit serve``'s plumbing without a browser: paths only inside the served folders, background jobs
(progress, cancel, errors), the targets the browser names, the command line's config."""
import os
import re
import threading
import time
import warnings

import pytest
import torch

from xaikit.serve.jobs import Jobs
from xaikit.serve.paths import PathRefused, safe_path


def test_safe_path_refuses_every_way_out(tmp_path):
    root, outside = tmp_path / "served", tmp_path / "secret"
    (root / "cats").mkdir(parents=True)
    outside.mkdir()
    (root / "cats" / "a.png").write_bytes(b"x")
    (outside / "key.txt").write_text("secret")
    os.symlink(outside / "key.txt", root / "link.txt")  # a link leading out
    os.symlink(outside, root / "door")  # a folder link leading out
    os.symlink(root / "cats" / "a.png", root / "inside.png")  # a link that stays inside is fine
    assert safe_path([root], "cats/a.png") == (root / "cats" / "a.png").resolve()
    assert safe_path([root], "inside.png") == (root / "cats" / "a.png").resolve()
    assert safe_path([outside, root], "cats/a.png") == (root / "cats" / "a.png").resolve()  # the root holding it
    for bad, why in [("../secret/key.txt", "'..'"), ("cats/../../secret/key.txt", "'..'"),
                     (str(outside / "key.txt"), "absolute"), ("link.txt", "link"), ("door/key.txt", "link"),
                     ("C:/Windows/win.ini", "absolute"), ("..\\secret\\key.txt", "'..'"), ("a\x00b", "NUL")]:
        with pytest.raises(PathRefused, match=why):
            safe_path([root], bad)
    with pytest.raises(FileNotFoundError, match="no file"):
        safe_path([root], "cats/b.png")
    with pytest.raises(PathRefused, match="serves no folder"):
        safe_path([], "cats/a.png")


def test_jobs_report_progress_finish_fail_and_cancel():
    jobs = Jobs(workers=2)
    release = threading.Event()

    def work(job, n):
        for i in range(n):
            job.check()
            job.report((i + 1) / n, f"step {i + 1} of {n}")
            release.wait(5)
        return {"steps": n}

    done = jobs.submit(work, 3, name="three steps")
    release.set()
    finished = jobs.wait(done.id, 10)
    assert (finished.status, finished.progress, finished.result, finished.message) == \
        ("done", 1.0, {"steps": 3}, "step 3 of 3")
    assert finished.to_json()["result"] == {"steps": 3}

    release.clear()
    slow = jobs.submit(work, 1000)
    while slow.progress == 0:
        time.sleep(0.005)
    jobs.cancel(slow.id)
    release.set()
    cancelled = jobs.wait(slow.id, 10)
    assert cancelled.status == "cancelled" and 0 < cancelled.progress < 1 and cancelled.result is None

    def broken(job):
        raise ValueError("unknown composite 'nope'")

    failed = jobs.wait(jobs.submit(broken).id, 10)
    assert failed.status == "failed" and failed.error == "ValueError: unknown composite 'nope'"
    assert "Traceback" in failed.trace and failed.to_json()["result"] is None
    with pytest.raises(KeyError, match="no job 'nope'"):
        jobs.get("nope")
    jobs.shutdown()


def test_targets_the_browser_names():
    from xaikit.serve.compute import parse_target
    from xaikit.serve.refusals import Refused
    from xaikit.targets import Contrast

    assert parse_target("argmax") is None and parse_target("") is None and parse_target(None) is None
    assert parse_target("3") == 3 and parse_target(2) == 2
    assert parse_target("1 vs 2") == Contrast(1, 2) and parse_target("argmax-0") == Contrast(None, 0)
    with pytest.raises(Refused, match="give argmax, a class index or 'a vs b'"):
        parse_target("cat")


def test_command_line_config(tmp_path):
    from xaikit.cli import build_parser
    from xaikit.cli.errors import NotFound, UsageError
    from xaikit.cli.serve_command import make_config
    from xaikit.serve.server import check_host

    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "ground-truth-cnn", "--data", "ground-truth", "--num-samples", "3",
                              "--upload-limit", "2", "--root", str(tmp_path)])
    args.device = "cpu"
    config = make_config(args)
    assert config.host == "127.0.0.1" and config.upload_limit == 2 * 2 ** 20 and config.model.size == 32
    names = sorted(p.name for p in config.data.iterdir())
    assert len(names) == 3 and all(re.fullmatch(r"00[0-2]-[0-3]\.png", n) for n in names), names
    assert config.served_roots == (tmp_path.resolve(), config.data.resolve())
    args = parser.parse_args(["serve", "--data", str(tmp_path / "nowhere"), "--model", "ground-truth-cnn"])
    args.device = "cpu"
    with pytest.raises(NotFound, match="--data .* not found"):
        make_config(args)
    args = parser.parse_args(["serve"])
    with pytest.raises(UsageError, match="give a model"):
        make_config(args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_host("127.0.0.1")
    with pytest.warns(UserWarning, match="other machines on the network can reach it"):
        check_host("0.0.0.0")


def test_train_data_option_is_the_revise_data_option():
    from xaikit.cli import build_parser
    from xaikit.cli.errors import UsageError
    from xaikit.cli.parts import ground_truth_training
    from xaikit.cli.serve_command import make_config

    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "ground-truth-cnn", "--train-data", "ground-truth"])
    args.device = "cpu"
    train = make_config(args).extra["revise"]  # the revise view's and the training data panel's data
    assert train["about"] == {"kind": "ground-truth", "seed": 0, "n_train": 512} and train["evaluate"] == {}
    x, y = ground_truth_training(512, 0)
    assert torch.equal(train["x"], x) and torch.equal(train["y"], y)
    same = parser.parse_args(["serve", "--revise-data", "decoy-digits:3"])
    assert same.revise_data == "decoy-digits:3"
    args = parser.parse_args(["serve", "--model", "ground-truth-cnn", "--train-data", "ground-truth:x"])
    args.device = "cpu"
    with pytest.raises(UsageError, match="ground-truth:SEED needs an integer seed"):
        make_config(args)
