"""Train LeNet-5 on Fashion-MNIST with cnncore, save it, reload it and plot what it learned.

    python examples/lenet_fashion_mnist.py [--epochs 15] [--sample] [--limit N]

Uses the full dataset when it is installed (``apt install dataset-fashion-mnist``, or the IDX
files in $CNNCORE_DATA / ~/.cache/cnncore/fashion-mnist), otherwise the sample shipped with
cnncore.  The recipe is the README's: SGD lr 0.02, momentum 0.9, weight decay 5e-4, batch 32,
cosine schedule (91.56 % test accuracy after 15 epochs on the full dataset).
"""

import argparse

import numpy as np

import cnncore
from cnncore import datasets, models, nn, optim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--sample", action="store_true", help="use the shipped sample")
    ap.add_argument("--out", default="lenet-fashion.npz")
    ap.add_argument("--limit", type=int, default=None, help="use the first N training images")
    args = ap.parse_args()

    try:
        if args.sample:
            raise FileNotFoundError
        (x, y), (xt, yt) = datasets.load_fashion_mnist()
    except FileNotFoundError:
        (x, y), (xt, yt) = datasets.load_sample()
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    print(f"{len(x)} training and {len(xt)} test images")

    model = models.lenet5(rng=0)
    model.summary((1, 1, 28, 28))
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    sched = optim.CosineAnnealingLR(opt, T_max=args.epochs)
    history = model.fit(
        x,
        y,
        optimizer=opt,
        loss=nn.CrossEntropyLoss(),
        epochs=args.epochs,
        batch_size=32,
        validation_data=(xt, yt),
        seed=0,
        scheduler=sched,
    )
    print(f"test accuracy: {100 * model.evaluate(xt, yt)['accuracy']:.2f} %")

    model.save(args.out)
    again = cnncore.load(args.out)
    assert np.array_equal(again.predict(xt[:100]), model.predict(xt[:100]))
    print(f"saved to {args.out} and reloaded: identical predictions")

    try:
        from cnncore import viz

        viz.training_report(
            model, history, xt[0], "lenet-fashion.png", title="LeNet-5 on Fashion-MNIST"
        )
        print("wrote lenet-fashion.png")
    except ImportError as exc:
        print(f"(no plot: {exc})")


if __name__ == "__main__":
    main()
