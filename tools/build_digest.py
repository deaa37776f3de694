"""Digest of what the SIMD-built kernel modules compute: compare two builds bit for bit.

    CNNCORE_SIMD=baseline python tools/build_digest.py [--threads 2] [--verbose]

Runs the convolution (every algorithm, forward and both gradients, transposed, the fused
conv-ReLU-pool), normalization and resizing kernels on fixed random inputs in float32 and
float64 and prints one SHA-256 over all their output bytes (``--verbose``: one per case).
Run it with the build before and after a change of compiler flags, at each SIMD level
(``CNNCORE_SIMD=baseline|avx2|avx512``): equal digests mean the same results bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cnncore  # noqa: E402
from cnncore import functional as F  # noqa: E402
from cnncore.ops import conv as conv_ops  # noqa: E402
from cnncore.ops.conv_dispatch import ALGORITHMS, conv_algorithm  # noqa: E402

# (N, C_in, H, W, C_out, kernel, stride, padding, groups)
CONV_CASES = [
    (2, 16, 14, 15, 32, 3, 1, 1, 1),
    (2, 3, 17, 16, 8, 5, 1, 2, 1),
    (2, 32, 12, 12, 64, 3, 2, 1, 1),
    (2, 64, 9, 9, 64, 1, 1, 0, 1),
    (2, 24, 13, 11, 24, 3, 1, 1, 24),
    (1, 16, 10, 10, 32, 3, 1, 0, 2),
]


def cases(dtype):
    rng = np.random.default_rng(1234)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    for n, cin, h, w, cout, k, s, p, g in CONV_CASES:
        x, wt, b = rand(n, cin, h, w), rand(cout, cin // g, k, k), rand(cout)
        y0 = F.conv2d(x, wt, b, stride=s, padding=p, groups=g)
        go = rand(*y0.shape)
        for algo in ALGORITHMS[1:]:
            with conv_algorithm(algo):
                tag = f"conv {algo} {n, cin, h, w, cout, k, s, p, g}"
                yield f"{tag} forward", F.conv2d(x, wt, b, stride=s, padding=p, groups=g)
                grads = F.conv2d_backward(go, x, wt, stride=s, padding=p, groups=g)
                for name, grad in zip(("input", "weight", "bias"), grads, strict=True):
                    yield f"{tag} grad {name}", grad
                wt_t = rand(cout, cin // g, k, k)
                yield f"{tag} transposed", F.conv_transpose2d(go, wt_t, None, s, p, groups=g)
        fused = conv_ops._conv2d_relu_max_pool2d(x, wt, b, s, p, 1, g)
        if fused is not None:
            yield f"conv-relu-pool {n, cin, h, w, cout, k, s, p, g}", fused[0]
            yield f"conv-relu-pool indices {n, cin, h, w, cout, k, s, p, g}", fused[1]
    x = rand(4, 16, 13, 17)
    go = rand(4, 16, 13, 17)
    gamma, beta = rand(16), rand(16)
    yield "group_norm", F.group_norm(x, 4, gamma, beta)
    yield "group_norm grads", F.group_norm_backward(go, x, 4, gamma)
    yield "layer_norm", F.layer_norm(x, (13, 17), rand(13, 17), rand(13, 17))
    yield "layer_norm grads", F.layer_norm_backward(go, x, (13, 17), rand(13, 17))
    yield "instance_norm", F.instance_norm(x, weight=gamma, bias=beta)
    yield "instance_norm grads", F.instance_norm_backward(go, x, weight=gamma)
    mean, var = np.zeros(16, dtype), np.ones(16, dtype)
    yield "batch_norm train", F.batch_norm(x, mean, var, gamma, beta, training=True)
    yield "batch_norm eval", F.batch_norm(x, mean, var, gamma, beta)
    yield "batch_norm grads", F.batch_norm_backward(go, x, mean, var, gamma, training=True)
    for mode, corners in (("nearest", None), ("bilinear", False), ("bilinear", True)):
        for size in ((29, 31), (7, 9)):
            y = F.interpolate(x, size=size, mode=mode, align_corners=corners)
            yield f"interpolate {mode} {corners} {size}", y
            grad = F.interpolate_backward(rand(*y.shape), x.shape, mode=mode, align_corners=corners)
            yield f"interpolate_backward {mode} {corners} {size}", grad
    yield "pixel_shuffle", F.pixel_shuffle(x, 2)
    yield "pixel_unshuffle", F.pixel_unshuffle(rand(2, 4, 12, 10), 2)


def _bytes(value):
    if isinstance(value, tuple | list):
        return b"".join(_bytes(v) for v in value)
    if value is None:
        return b"None"
    return np.ascontiguousarray(value).tobytes()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="a digest per case")
    args = parser.parse_args(argv)
    cnncore.set_num_threads(args.threads)
    total = hashlib.sha256()
    count = 0
    for dtype in (np.float32, np.float64):
        for name, value in cases(dtype):
            data = _bytes(value)
            total.update(data)
            count += 1
            if args.verbose:
                print(f"{hashlib.sha256(data).hexdigest()[:16]}  {np.dtype(dtype).name} {name}")
    levels = dict(cnncore._config._loaded_simd)
    print(f"{total.hexdigest()}  ({count} results; SIMD levels {levels})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
