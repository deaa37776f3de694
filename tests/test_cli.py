"""The ``cnncore`` command, the caching allocator and the examples."""

import os
import subprocess
import sys

import numpy as np
import pytest

import cnncore
from cnncore import _alloc
from cnncore.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "OpenMP" in out and "threads" in out and "BLAS" in out and cnncore.__version__ in out


def test_demo_quick(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--threads", "2", "demo", "--epochs", "1", "--quiet", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert not (tmp_path / "cnncore-demo.png").exists()


def test_train_save_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    model_path = tmp_path / "m.npz"
    png = tmp_path / "p.png"
    code = main(
        [
            "train",
            "--model",
            "cnn",
            "--data",
            "sample",
            "--limit",
            "256",
            "--epochs",
            "1",
            "--quiet",
            "--optimizer",
            "adam",
            "--save",
            str(model_path),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    assert model_path.exists() and png.stat().st_size > 10_000
    model = cnncore.load(model_path)
    assert model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_train_checkpoint_dir_and_resume_in_new_processes(tmp_path):
    """`cnncore train --checkpoint-dir` writes one checkpoint per epoch; `--resume` from the
    second continues (in a new process) to the same weights as the uninterrupted run."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnncore.__file__)))
    common = ["train", "--model", "cnn", "--dropout", "0.3", "--augment", "--limit", "192",
              "--epochs", "3", "--quiet", "--optimizer", "adam", "--batch-size", "32"]  # fmt: skip

    def run(*extra):
        code = "import sys; from cnncore.cli import main; sys.exit(main(sys.argv[1:]))"
        res = subprocess.run(
            [sys.executable, "-c", code, *common, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    run("--checkpoint-dir", "ck", "--save", "full.npz")
    assert sorted(os.listdir(tmp_path / "ck")) == [f"epoch{e:04d}.npz" for e in (1, 2, 3)]
    out = run("--resume", str(tmp_path / "ck" / "epoch0002.npz"), "--save", "resumed.npz")
    assert "resuming from" in out and "after epoch 2" in out
    with np.load(tmp_path / "full.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    assert main(["train", "--resume", str(tmp_path / "nope.npz"), "--quiet"]) == 2


@pytest.mark.parametrize(
    "argv, threads",
    [
        (["train", "--threads", "1"], 1),  # after the command, as the README shows it
        (["--threads", "1", "train"], 1),  # before it
        (["--threads", "1", "train", "--threads", "2"], 2),
    ],
)
def test_threads_option_before_or_after_the_command(argv, threads, capsys, restore_threads):
    # regression: `cnncore train --threads N` was rejected ("unrecognized arguments")
    argv = argv + ["--limit", "64", "--epochs", "1", "--quiet"]
    assert main(argv) == 0
    assert f"{threads} thread(s)" in capsys.readouterr().out
    assert cnncore.get_num_threads() == threads


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "/no/such/dir"],
        ["--threads", "0", "info"],
        ["train", "--epochs", "-1", "--limit", "64"],
    ],
)
def test_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    code = "import sys; from cnncore.cli import main; sys.exit(main(['info']))"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnncore.__file__)))
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr


def test_examples_run(tmp_path):
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    script = os.path.join(root, "image_filtering.py")
    if not os.path.exists(script):
        pytest.skip("examples/ not available (installed package only)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnncore.__file__)))
    res = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "conv2d bank == correlate2d: True True" in res.stdout


def test_caching_allocator_reuses_and_releases():
    assert _alloc.cached_bytes() == 0
    with _alloc.caching():
        a = np.ones(1 << 16)
        ptr = a.ctypes.data
        del a
        assert _alloc.cached_bytes() == 8 << 16
        b = np.zeros(1 << 16)  # same size: the cached block, zeroed
        assert b.ctypes.data == ptr and not b.any()
        keep = np.full(1 << 15, 3.0)
        small = np.ones(10)
    assert _alloc.cached_bytes() == 0
    # arrays created inside stay valid afterwards and are freed normally
    assert keep.sum() == 3.0 * (1 << 15) and small.sum() == 10 and not b.any()
    del keep, b
    assert _alloc.cached_bytes() == 0
