"""Classic image filtering with cnncore's low-level ops on a plain 2-D NumPy image.

    python examples/image_filtering.py

Shows the two levels of the API: ``cnncore.correlate2d``/``convolve2d`` (scipy.signal-style,
one 2-D image and one 2-D kernel, here the classic filter matrices of ``cnncore.filters``) and
``cnncore.conv2d`` (a batch of images through a bank of filters at once, NCHW), and checks that
they agree.
"""

import numpy as np

import cnncore
from cnncore import filters


def main() -> None:
    (x, y), _ = cnncore.datasets.load_sample()
    image = x[0, 0].astype(np.float64)  # a 28x28 Fashion-MNIST picture, values in [0, 1]

    # scipy.signal-style: one image, one kernel
    blurred = cnncore.convolve2d(image, filters.gaussian(5, 1.0), mode="same", boundary="symm")
    sharp = cnncore.convolve2d(image, filters.SHARPEN, mode="same", boundary="symm")
    gx = cnncore.correlate2d(image, filters.SOBEL_X, mode="same")  # zero-filled border
    gy = cnncore.correlate2d(image, filters.SOBEL_Y, mode="same")
    edges = np.hypot(gx, gy)

    # the same Sobel responses as one conv2d call: a 2-filter bank over a batch of one
    bank = np.stack([filters.SOBEL_X, filters.SOBEL_Y])[:, None]  # (C_out=2, C_in=1, 3, 3)
    both = cnncore.conv2d(image[None, None], bank, padding=1)[0]
    print("conv2d bank == correlate2d:", np.allclose(both[0], gx), np.allclose(both[1], gy))
    print("edge magnitude range:", float(edges.min()), float(edges.max()))

    try:
        from cnncore.viz import require_matplotlib

        plt = require_matplotlib()
        fig, axes = plt.subplots(1, 4, figsize=(10, 3))
        for ax, img, title in zip(
            axes,
            (image, blurred, sharp, edges),
            ("original", "Gaussian blur", "sharpen", "Sobel edges"),
            strict=True,
        ):
            ax.imshow(img, cmap="gray")
            ax.set_title(title)
            ax.axis("off")
        fig.savefig("filtering.png", dpi=100, bbox_inches="tight")
        print("wrote filtering.png")
    except ImportError as exc:
        print(f"(no plot: {exc})")


if __name__ == "__main__":
    main()
