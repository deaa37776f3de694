"""Train a small CNN on a folder of your own images, one sub-folder per class.

    python examples/train_on_image_folder.py [DIR] [--size 32] [--epochs 10]

DIR holds one sub-folder per class (torchvision's ImageFolder layout): ``DIR/cat/001.png``,
``DIR/dog/002.jpg``, ...  Without DIR the script first writes such a folder
(``fashion-images/``, PNG files) from the Fashion-MNIST sample shipped with cnncore, so you
can see the layout it expects.  Needs Pillow: ``pip install "cnncore[images]"``.

The network ends in ``AdaptiveAvgPool2d``, so it takes any image size; ``--size`` resizes
every image (bilinear) to a square of that side.
"""

import argparse
import os

import numpy as np

import cnncore
from cnncore import datasets, nn, optim


def write_sample_folder(root: str, per_class: int) -> None:
    """``per_class`` images of each Fashion-MNIST class as ``root/<class>/<n>.png``."""
    from PIL import Image

    (x, y), _ = datasets.load_sample()
    for label, name in enumerate(datasets.FASHION_MNIST_CLASS_NAMES):
        folder = os.path.join(root, name.replace("/", "-"))
        os.makedirs(folder, exist_ok=True)
        for i, k in enumerate(np.flatnonzero(y == label)[:per_class]):
            pixels = np.round(x[k, 0] * 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.png"))


def split(x, y, test_fraction, seed):
    """A stratified split: ``test_fraction`` of each class becomes the test set."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        test[idx[: max(1, int(test_fraction * len(idx)))]] = True
    return (x[~test], y[~test]), (x[test], y[test])


def small_cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),  # any input size -> 4x4
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, num_classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", help="folder with one sub-folder of images per class")
    ap.add_argument("--size", type=int, default=32, help="resize images to SIZE x SIZE")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument(
        "--per-class", type=int, default=100, help="images per class of the generated folder"
    )
    args = ap.parse_args()

    root = args.dir
    if root is None:
        root = "fashion-images"
        write_sample_folder(root, args.per_class)
        print(f"wrote {args.per_class} PNG images per class under {root}/<class>/")

    x, y, classes = datasets.load_image_folder(root, size=args.size)
    print(f"{len(x)} images of shape {x.shape[1:]} in {len(classes)} classes: {classes}")
    (x_train, y_train), (x_test, y_test) = split(x, y, 0.2, seed=0)

    cnncore.manual_seed(0)
    model = small_cnn(x.shape[1], len(classes))
    model.summary((1, *x.shape[1:]))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    model.fit(
        x_train,
        y_train,
        optimizer=opt,
        loss=nn.CrossEntropyLoss(),
        epochs=args.epochs,
        batch_size=32,
        validation_data=(x_test, y_test),
        seed=0,
    )
    print(f"test accuracy: {100 * model.evaluate(x_test, y_test)['accuracy']:.1f} %")

    model.save("image-folder-model.npz")
    again = cnncore.load("image-folder-model.npz")
    pred = again.predict(x_test[:5]).argmax(axis=1)
    for p, t in zip(pred, y_test[:5], strict=True):
        print(f"predicted {classes[p]:<12} true {classes[t]}")


if __name__ == "__main__":
    main()
