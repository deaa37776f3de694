"""Denoise Fashion-MNIST images with a small U-Net built as a cnncore graph model.

    python examples/unet_denoising.py [--epochs 4] [--limit N] [--sigma 0.3] [--full]
                                      [--out unet-denoise.npz]

The network (``nn.Model``) is a two-level U-Net: an encoder of 3x3 convolutions and max
pooling (28 -> 14 -> 7 pixels), a decoder that upsamples with ``nn.ConvTranspose2d``
(kernel 2, stride 2) and concatenates the encoder's features of the same size
(``nn.Concatenate`` skip connections) before its 3x3 convolutions, and a 1x1 convolution
whose output is added to the noisy input (``nn.Add``: the network learns the correction,
minus the noise, as DnCNN does).  It
learns to remove Gaussian noise of standard deviation ``--sigma`` from the images of the
Fashion-MNIST sample shipped with cnncore (``--full``: the full dataset when it is
installed), trained on the mean squared error with Adam, and prints the test images' PSNR
before (noisy) and after (denoised).  ``--limit`` and ``--epochs`` make a short run.
"""

import argparse
import math
import time

import numpy as np

import cnncore
from cnncore import datasets, nn, optim


def unet(channels: int = 8, rng: int = 0) -> nn.Model:
    """A U-Net for (1, 28, 28) images: widths ``channels``, 2x and 4x ``channels``."""
    c1, c2, c3 = channels, 2 * channels, 4 * channels

    def conv_relu(x, c_in, c_out, name):
        return nn.ReLU(name=name + "_relu")(
            nn.Conv2d(c_in, c_out, 3, padding=1, name=name, rng=rng)(x)
        )

    noisy = nn.Input((1, 28, 28), name="noisy")
    e1 = conv_relu(conv_relu(noisy, 1, c1, "enc1a"), c1, c1, "enc1b")  # 28x28
    e2 = nn.MaxPool2d(2, name="pool1")(e1)  # 14x14
    e2 = conv_relu(conv_relu(e2, c1, c2, "enc2a"), c2, c2, "enc2b")
    b = nn.MaxPool2d(2, name="pool2")(e2)  # 7x7
    b = conv_relu(conv_relu(b, c2, c3, "mida"), c3, c3, "midb")
    u2 = nn.ConvTranspose2d(c3, c2, 2, stride=2, name="up2", rng=rng)(b)  # 14x14
    d2 = nn.Concatenate(dim=1, name="skip2")([u2, e2])
    d2 = conv_relu(conv_relu(d2, 2 * c2, c2, "dec2a"), c2, c2, "dec2b")
    u1 = nn.ConvTranspose2d(c2, c1, 2, stride=2, name="up1", rng=rng)(d2)  # 28x28
    d1 = nn.Concatenate(dim=1, name="skip1")([u1, e1])
    d1 = conv_relu(conv_relu(d1, 2 * c1, c1, "dec1a"), c1, c1, "dec1b")
    correction = nn.Conv2d(c1, 1, 1, name="correction", rng=rng)(d1)  # minus the noise
    return nn.Model(noisy, nn.Add(name="denoised")([noisy, correction]), name="unet")


def psnr(clean: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (over the whole set)."""
    mse = float(np.mean((np.clip(image, 0, 1) - clean) ** 2, dtype=np.float64))
    return 10 * math.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="use the first N training images")
    ap.add_argument("--sigma", type=float, default=0.3, help="noise standard deviation")
    ap.add_argument("--full", action="store_true", help="full Fashion-MNIST if installed")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="save the trained model (.npz)")
    args = ap.parse_args()

    (x, _), (xt, _) = datasets.load_sample()
    if args.full:
        try:
            (x, _), (xt, _) = datasets.load_fashion_mnist()
        except FileNotFoundError:
            print("full Fashion-MNIST is not installed: using the shipped sample")
    if args.limit is not None:
        x, xt = x[: args.limit], xt[: max(args.limit // 4, 64)]
    rng = np.random.default_rng(0)
    noisy = (x + args.sigma * rng.standard_normal(x.shape)).astype(np.float32)
    noisy_t = (xt + args.sigma * rng.standard_normal(xt.shape)).astype(np.float32)
    print(f"{len(x)} training and {len(xt)} test images, Gaussian noise sigma {args.sigma}")

    model = unet()
    model.summary((1, 1, 28, 28))
    opt = optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    model.fit(
        noisy,
        x,
        optimizer=opt,
        loss=nn.MSELoss(),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=0,
    )
    denoised = model.predict(noisy_t)
    print(
        f"test PSNR: noisy {psnr(xt, noisy_t):.2f} dB -> denoised {psnr(xt, denoised):.2f} dB "
        f"(training took {time.perf_counter() - t0:.1f} s)"
    )
    if args.out:
        model.save(args.out)
        again = cnncore.load(args.out)
        assert np.array_equal(again.predict(noisy_t[:16]), denoised[:16])
        print(f"saved to {args.out} and reloaded: identical outputs")


if __name__ == "__main__":
    main()
