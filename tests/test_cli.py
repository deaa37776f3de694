"""The ``cnncore`` command (including its table of nonsense flags) and the caching allocator."""

import os
import signal
import subprocess
import sys
import time

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


def _nonsense_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no_images" / "cat"
    no_images.mkdir(parents=True)
    (no_images / "notes.txt").write_text("not an image")
    return [
        (["train", "--epochs", "0"], "--epochs"),
        (["demo", "--epochs", "0"], "--epochs"),
        (["train", "--epochs", "ten"], "--epochs"),
        (["train", "--limit", "-5"], "--limit"),
        (["train", "--limit", "0"], "--limit"),
        (["train", "--dropout", "0.3"], "--dropout"),  # --model lenet is the default
        (["train", "--model", "cnn", "--dropout", "1.5"], "--dropout"),
        (["bench", "--repeat", "0"], "--repeat"),
        (["bench", "--repeat", "3"], "--repeat"),
        (["--threads", "0", "info"], "--threads"),
        (["train", "--threads", "0"], "--threads"),
        (["train", "--threads", "-2"], "--threads"),
        (["train", "--batch-size", "-1"], "--batch-size"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--data", str(empty)], "--data"),
        (["train", "--data", str(tmp_path / "no_images")], "--data"),
        (["train", "--data", "/no/such/dir"], "--data"),
        (["train", "--data", "cifar"], "--data"),
        (["train", "--save", "/nonexistent/dir/m.npz"], "--save"),
        (["train", "--save", str(tmp_path)], "--save"),
        (["train", "--plot", "/nonexistent/dir/p.png"], "--plot"),
        (["demo", "--plot", "/nonexistent/dir/p.png"], "--plot"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "-0.1"], "--lr"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--lr", "inf"], "--lr"),
        (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum"),
        (["train", "--momentum", "1.5"], "--momentum"),
        (["train", "--weight-decay", "-1"], "--weight-decay"),
        (["train", "--label-smoothing", "2"], "--label-smoothing"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--model", "vgg"], "--model"),
        (["train", "--optimizer", "lbfgs"], "--optimizer"),
        (["train", "--schedule", "linear"], "--schedule"),
        (["bench", "--suite", "gemm"], "--suite"),
        (["bench", "--suite", "norm", "gemm"], "--suite"),
        (["bench", "--markdown", "/nonexistent/dir/perf.md"], "--markdown"),
    ]


def test_nonsense_flags_exit_2_naming_the_flag_before_any_work(tmp_path, capsys, monkeypatch):
    """The CLI test table: every bad flag exits 2 with a message naming it, before any data
    is loaded or any training starts (and quickly)."""
    from cnncore.apps import cli

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the flags were checked")

    monkeypatch.setattr(cli, "_load_data", no_work)
    monkeypatch.setattr(cli, "cmd_bench", no_work)
    monkeypatch.setattr(cnncore.nn.training, "fit", no_work)
    failures = []
    for argv, flag in _nonsense_cases(tmp_path):
        t0 = time.perf_counter()
        code = main(argv)
        elapsed = time.perf_counter() - t0
        err = capsys.readouterr().err
        if code != 2 or flag not in err or "error" not in err or elapsed > 3.0:
            failures.append((argv, code, round(elapsed, 2), err.strip().splitlines()[-1:]))
    assert not failures, failures


def test_threads_beyond_the_cores_warn(capsys, restore_threads):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert main(["--threads", str(cores + 1), "info"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and f"--threads {cores + 1}" in err and f"{cores} core" in err


def test_help_shows_defaults(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "(default: 10)",
        "(default: cosine)",
        "(default: 64)",
        "(default: lenet)",
        "L2 penalty (default: 0;",
        "seeds weights, shuffling, dropout (default: 0)",
    ):
        assert text in out, text
    assert "(default: None)" not in out


def test_ctrl_c_says_so_saves_and_exits_130(tmp_path, capsys, monkeypatch):
    """A --quiet run stopped by SIGINT in its third step: stderr says it was interrupted,
    the model is still saved, the exit status is 130."""
    calls = {"n": 0}
    original = cnncore.nn.CrossEntropyLoss.forward

    def forward(self, output, target):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # fit's handler stops after this step
        return original(self, output, target)

    monkeypatch.setattr(cnncore.nn.CrossEntropyLoss, "forward", forward)
    path = tmp_path / "m.npz"
    argv = ["train", "--limit", "640", "--epochs", "3", "--quiet", "--save", str(path)]
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and "epoch 1 of 3" in captured.err
    assert "after 0 finished epoch(s)" in captured.out
    assert path.exists() and cnncore.load(path).predict(np.zeros((1, 1, 28, 28))).shape == (1, 10)


def test_train_on_an_image_folder(tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(("circle", "square", "zebra")):
            folder = tmp_path / "shapes" / split / name
            folder.mkdir(parents=True)
            for i in range(8 if split == "train" else 3):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) // (c + 1)
                image.fromarray(pixels).save(folder / f"{i}.png")
    model_path = tmp_path / "m.npz"
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "shapes"),
            "--epochs",
            "1",
            "--quiet",
            "--save",
            str(model_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "24 training / 9 test images" in out and "circle, square, zebra" in out
    model = cnncore.load(model_path)
    assert model.predict(np.zeros((2, 3, 28, 28), np.float32)).shape == (2, 3)


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


def test_bench_without_torch_prints_cnncore_figures_and_how_to_get_ratios(
    capsys, monkeypatch, tmp_path
):
    from cnncore.apps import bench

    seen = {}

    def fake_pool(quick, use_torch, repeat):
        seen.update(quick=quick, use_torch=use_torch, repeat=repeat)
        row = {
            "shape": (2, 3, 8, 8),
            "kernel": 2,
            "stride": 2,
            "padding": 0,
            "pass": "max fwd+bwd",
            "cnncore_s": 1e-3,
            "gbs": 1.5,
            "copy_gbs": 9.0,
        }
        return {"threads": 1, "repeat": repeat, "rows": [row]}

    monkeypatch.setattr(bench, "try_import_torch", lambda: None)
    monkeypatch.setitem(bench.SUITES, "pool", fake_pool)
    monkeypatch.setitem(bench.SUITES, "norm", lambda **kw: seen.setdefault("norm", kw) and None)
    md = tmp_path / "perf.md"
    assert main(["bench", "--suite", "pool", "--quick", "--markdown", str(md)]) == 0
    assert "norm" not in seen
    capsys.readouterr()
    assert main(["bench", "--suite", "pool", "norm", "pool", "--quick"]) == 0
    assert "### pool" in capsys.readouterr().out and seen.pop("norm")["quick"]
    assert main(["bench", "--suite", "pool", "--quick", "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "pip install torch" in out and seen == {"quick": True, "use_torch": False, "repeat": 7}
    text = md.read_text()
    assert text.startswith("Measured with `cnncore bench --quick --markdown` on: ")
    assert "no PyTorch (no ratios)" in text and "`pip install torch`" in text
    assert "| 2,3,8,8, k2 s2 p0 | max fwd+bwd | 1.000 | – | 1.5 | 9.0 |" in text


def test_markdown_report_of_every_suite_names_the_machine():
    from cnncore.apps.bench.report import machine_info, markdown_report

    m = machine_info(use_torch=False)
    assert m["cores"] >= 1 and m["numpy"] == np.__version__ and m["cpu"]
    results = {
        "conv": {
            "sgemm_roof_gflops": 100.0,
            "rows": [
                {
                    "shape": (1, 1, 4, 4, 2, 3, 1, 1),
                    "algorithm": ("gemm", "gemm", "gemm"),
                    "fwd_s": 1e-3,
                    "fwd_bwd_s": 3e-3,
                    "fwd_ratio": 0.5,
                    "fwd_bwd_ratio": 0.7,
                    "fwd_bwd_pct_roof": 12.0,
                }
            ],
            "geomean_fwd_ratio": 0.5,
            "geomean_fwd_bwd_ratio": 0.7,
        },
        "activation": {
            "elements": 2**20,
            "geomean_copy_ratio": 1.1,
            "rows": [{"op": "relu", "cnncore_s": 1e-3, "gbs": 8.0, "copy_ratio": 1.1}],
        },
        "train": {
            "data": "sample",
            "epochs": 2,
            "rows": [
                {"model": "lenet", "images": 5780, "cnncore_s": 0.5, "torch_s": 0.8, "ratio": 0.62}
            ],
        },
    }
    conv_row = results["conv"]["rows"][0]
    results["depthwise"] = {
        **results["conv"],
        "suite": "depthwise",
        "rows": [{**conv_row, "shape": (32, 64, 56, 56, 1, 3, 2, 1)}],
    }
    results["transposed"] = {
        **results["conv"],
        "suite": "transposed",
        "rows": [
            {**conv_row, "shape": (32, 64, 16, 16, 32, 4, 2, 1, 0)},
            {**conv_row, "shape": (32, 64, 16, 16, 32, 3, 2, 1, 1)},
        ],
    }
    row = {"op": "group_norm", "cnncore_s": 2e-3, "gbs": 4.0, "copy_ratio": 1.2}
    results["norm"] = {"batch": 32, "geomean_copy_ratio": 1.2, "rows": [row]}
    results["resize"] = {"batch": 8, "geomean_copy_ratio": 1.2, "rows": [row]}
    text = markdown_report(results, {**m, "torch": "2.x"})
    assert "| 1,1,4,4 → 2,3,1,1 | gemm | 1.000 | 0.50 | 3.000 | 0.70 | 12 |" in text
    assert "**Depthwise convolution**" in text and "| 32,64,56,56 → 64,3,2,1 g64 | gemm |" in text
    assert "**Transposed convolution**" in text and "| 32,64,16,16 → 32,4,2,1 | gemm" in text
    assert "| 32,64,16,16 → 32,3,2,1,1 | gemm" in text
    assert "**Normalization** (float32, batch 32;" in text and "(8,256,28,28)" in text
    assert "| group_norm | 2.00 | 4.0 | 1.20 | – |" in text
    assert "| relu | 1.00 | 8.0 | 1.10 | – |" in text
    assert "| lenet | 0.50 | 11,560 | 0.80 | 0.62 |" in text
    assert f"{m['cores']} usable core(s)" in text and "PyTorch 2.x" in text


def test_missing_dataset_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CNNCORE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    t0 = time.perf_counter()
    assert main(["train", "--data", "mnist", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "argument --data" in err and "--data DIR" in err and "path=DIR" not in err
    assert time.perf_counter() - t0 < 5.0


def test_sync_bn_needs_distributed(capsys):
    assert main(["train", "--model", "resnet20", "--sync-bn", "--epochs", "1"]) == 2
    assert "argument --sync-bn: applies to --distributed only" in capsys.readouterr().err
