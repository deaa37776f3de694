"""``cnncore predict`` (PNG/JPEG/.npy images, any model file) and ``cnncore export``."""

import numpy as np
import pytest

from cnncore import datasets, models, nn
from cnncore.apps import predict as pr
from cnncore.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained briefly on the shipped sample, saved as .npz and .safetensors."""
    (x, y), _ = datasets.load_sample()
    model = models.lenet5(rng=0)
    opt = nn.training.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.fit(
        x[:1500], y[:1500], optimizer=opt, loss="cross_entropy", epochs=2, verbose=False, seed=0
    )
    d = tmp_path_factory.mktemp("cli")
    model.save(d / "m.npz")
    model.save(d / "m.safetensors")
    return model, d, x[:4], y[:4]


def _expected_top1(model, images):
    return model.predict(images).argmax(1)


def test_predict_npy_and_images(trained, capsys):
    PIL = pytest.importorskip("PIL.Image")
    model, d, x, y = trained
    np.save(d / "one.npy", x[0, 0])  # (H, W) float in [0, 1]
    np.save(d / "batch.npy", x[:3])  # (N, 1, H, W)
    u8 = np.round(x[:, 0] * 255).astype(np.uint8)
    PIL.fromarray(u8[1]).save(d / "gray.png")
    PIL.fromarray(np.stack([u8[2]] * 3, -1)).save(d / "rgb.png")
    PIL.fromarray(u8[3]).resize((56, 56), PIL.Resampling.NEAREST).save(d / "big.jpg", quality=100)
    files = [str(d / f) for f in ("one.npy", "batch.npy", "gray.png", "rgb.png", "big.jpg")]
    for model_file in ("m.npz", "m.safetensors"):
        assert (
            main(
                [
                    "predict",
                    str(d / model_file),
                    *files,
                    "--top-k",
                    "2",
                    "--labels",
                    "fashion-mnist",
                ]
            )
            == 0
        )
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 7
        top1 = _expected_top1(model, x)
        names = datasets.FASHION_MNIST_CLASS_NAMES
        assert lines[0].startswith(f"{files[0]}: {names[top1[0]]} (")
        for i in range(3):
            assert lines[1 + i].startswith(f"{files[1]}[{i}]: {names[top1[i]]} (")
        assert lines[4].startswith(f"{files[2]}: {names[top1[1]]} (")
        assert lines[5].startswith(f"{files[3]}: {names[top1[2]]} (")  # RGB -> gray
        assert lines[6].startswith(f"{files[4]}: {names[top1[3]]} (")  # 56x56 -> 28x28
        assert lines[0].count("%") == 2


def test_export_then_predict_onnx(trained, capsys):
    pytest.importorskip("onnx")
    model, d, x, _ = trained
    out = d / "m.onnx"
    assert main(["export", str(d / "m.safetensors"), str(out)]) == 0
    assert "input (1, 1, 28, 28)" in capsys.readouterr().out
    np.save(d / "x.npy", x[:2])
    assert main(["predict", str(out), str(d / "x.npy"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    top1 = _expected_top1(model, x[:2])
    assert [int(line.split(": ")[1].split(" ")[0]) for line in lines] == list(top1)
    assert (
        main(
            [
                "export",
                str(d / "m.npz"),
                str(out),
                "--input-shape",
                "2,1,28,28",
                "--static-batch",
                "--opset",
                "13",
            ]
        )
        == 0
    )


def test_export_then_predict_graph_model(tmp_path, capsys):
    """A graph model (ResNet-20) exports with its Input shape and predicts from the .onnx
    as from its .npz."""
    pytest.importorskip("onnx")
    model = models.resnet20(rng=0, input_size=16)
    model.save(tmp_path / "r.npz")
    out = tmp_path / "r.onnx"
    assert main(["export", str(tmp_path / "r.npz"), str(out)]) == 0
    assert "input (1, 3, 16, 16)" in capsys.readouterr().out
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    top1 = [int(v) for v in model.predict(x).argmax(1)]
    for path in (out, tmp_path / "r.npz"):
        assert main(["predict", str(path), str(tmp_path / "x.npy"), "--top-k", "1"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert [int(line.split(": ")[1].split(" ")[0]) for line in lines] == top1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{d}/m.npz", "{d}/five.npy"], "5 channel"),
        (["predict", "{d}/m.npz", "{d}/bad.png"], "not a readable image"),
        (["predict", "{d}/m.npz", "{d}/text.npy"], "not a readable .npy"),
        (["predict", "{d}/m.npz", "{d}/img.gif"], "unsupported image type"),
        (["predict", "{d}/m.npz", "{d}/ok.npy", "--top-k", "0"], "--top-k"),
        (["predict", "{d}/m.npz", "{d}/ok.npy", "--labels", "a,b"], "--labels"),
        (["predict", "{d}/m.npz", "{d}/nope.npy"], "No such file"),
        (["predict", "{d}/nope.npz", "{d}/ok.npy"], "no such file"),
        (["predict", "{d}/mlp.npz", "{d}/ok.npy"], "cannot find an input size"),
        (["predict", "{d}/vec.npz", "{d}/ok.npy"], "not (N, classes)"),
        (["export", "{d}/m.npz", "{d}/o.onnx", "--input-shape", "1,x"], "--input-shape"),
        (["export", "{d}/m.npz", "{d}/o.onnx", "--input-shape", "1,3,28,28"], "does not accept"),
    ],
)
def test_bad_input(trained, capsys, argv, message):
    _, d, x, _ = trained
    np.save(d / "five.npy", np.zeros((1, 5, 28, 28), np.float32))
    np.save(d / "ok.npy", x[0])
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    (d / "text.npy").write_text("hello")
    (d / "img.gif").write_bytes(b"GIF89a")
    # no square input fits a Linear of 7 features after Flatten of C=1 images
    nn.Sequential(nn.Flatten(), nn.Linear(7, 3)).save(d / "mlp.npz")
    nn.Sequential(nn.Conv2d(1, 2, 3)).save(d / "vec.npz")  # output (N, 2, H, W)
    argv = [a.format(d=d) for a in argv]
    if argv[0] == "export":
        pytest.importorskip("onnx")
    if argv[2].endswith(".png"):
        pytest.importorskip("PIL")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_fit_images_and_input_size():
    model = models.simple_cnn(rng=0)
    assert pr.model_input_hw(model) == (28, 28)
    assert pr.model_input_hw(model, (30, 29)) == (30, 29)  # fits as it is: not resized
    gap = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GlobalAvgPool2d(), nn.Flatten(), nn.Linear(4, 2))
    assert pr.model_input_hw(gap, (40, 50)) == (40, 50)
    assert pr.input_channels(gap) == 3
    rgb = np.zeros((3, 8, 8), np.uint8)
    rgb[0] = 255
    gray = pr.fit_images([rgb], "x", 1, (8, 8))
    np.testing.assert_allclose(gray, 0.299, rtol=1e-6)
    three = pr.fit_images([np.ones((1, 4, 4), np.float32)], "x", 3, (4, 4), invert=True)
    assert three.shape == (1, 3, 4, 4) and not three.any()
