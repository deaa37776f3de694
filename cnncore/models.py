"""Ready-made networks: LeNet-5 and a small CNN for MNIST-class data (``(N, 1, 28, 28)``
inputs, 10 classes), the CIFAR ResNets of He et al. (2016) and a small MobileNet as graph
models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import nn
from ._typing import DTypeLike, IntPair, RNGLike
from ._validation import check_bool, check_choice, check_int

__all__ = ["lenet5", "simple_cnn", "resnet", "resnet20", "mobilenet_tiny", "MODELS", "build"]


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: DTypeLike = np.float32,
    rng: RNGLike = None,
) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling: conv6-5-p2, pool, conv16-5, pool, fc120, fc84, fc.

    61,706 parameters for 10 classes on 28x28 inputs.
    """
    gen = nn.init.get_rng(rng)
    kw = dict(dtype=dtype, rng=gen)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, **kw),
        nn.ReLU(),
        nn.Linear(120, 84, **kw),
        nn.ReLU(),
        nn.Linear(84, num_classes, **kw),
    )


def simple_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: DTypeLike = np.float32,
    rng: RNGLike = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A small VGG-style CNN: conv32-3-p1, pool, conv64-3-p1, pool, fc128, fc.

    421,642 parameters for 10 classes on 28x28 inputs; ``dropout`` (before the last layer)
    regularizes longer runs.
    """
    gen = nn.init.get_rng(rng)
    kw = dict(dtype=dtype, rng=gen)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 32, 3, padding=1, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128, **kw),
        nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(128, num_classes, **kw))
    return nn.Sequential(*layers)


#: Depths of the CIFAR ResNet family (``6 n + 2``: n basic blocks per stage).
RESNET_DEPTHS = (20, 32, 44, 56, 110)


def resnet(
    depth: int = 20,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: IntPair = (32, 32),
    *,
    dtype: DTypeLike = np.float32,
    rng: RNGLike = None,
) -> nn.Model:
    """The CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition" (CVPR
    2016, section 4.2), as a graph model.

    A 3x3 convolution with 16 filters, then three stages of ``n = (depth - 2) / 6`` basic
    blocks with 16, 32 and 64 channels (the second and third stage start with stride 2),
    global average pooling and a linear classifier.  A basic block is conv3x3-BN-ReLU-
    conv3x3-BN, added to its shortcut, then ReLU.  Convolutions have no bias (BatchNorm
    follows each).

    Parameters
    ----------
    depth : {20, 32, 44, 56, 110}
    num_classes, in_channels : int
    input_size : int or (int, int), default (32, 32)
        The height and width the model takes (CIFAR: 32; Fashion-MNIST: 28, taken as it is:
        the stages then run at 28, 14 and 7 pixels).
    dtype : float32 or float64
    rng : numpy Generator, int or None
        Seeds the layers' default (PyTorch) initialization.

    Returns
    -------
    Model
        Layers named ``conv1``, ``bn1``, ``relu1``, then per block ``stage{s}_block{b}_``
        + ``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2`` (``shortcut_conv``,
        ``shortcut_bn``), ``add``, ``relu2``; ``pool``, ``flatten``, ``fc``.

    Notes
    -----
    Shortcuts are the paper's **option B**: identity where the shape is kept, a 1x1
    convolution with stride 2 followed by BatchNorm (a projection) where a stage starts --
    two per network, so ResNet-20 has 272,474 parameters for 10 classes and 3 input
    channels (option A's parameter-free zero-padded identity: 269,722).

    Examples
    --------
    >>> from cnncore import models
    >>> model = models.resnet(20, in_channels=1, input_size=28, rng=0)
    >>> model.output_shape((2, 1, 28, 28))
    (2, 10)
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(
            f"resnet(): depth must be one of {RESNET_DEPTHS} (6 n + 2). Received: depth={depth!r}"
        )
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    gen = nn.init.get_rng(rng)
    kw: dict[str, Any] = dict(dtype=dtype, rng=gen)
    blocks = (depth - 2) // 6

    def conv_bn(
        x: nn.Node, c_in: int, c_out: int, k: int, stride: int, pre: str, suf: str
    ) -> nn.Node:
        conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False, name=f"{pre}conv{suf}", **kw)
        return nn.BatchNorm2d(c_out, dtype=dtype, name=f"{pre}bn{suf}")(conv(x))

    inp = nn.Input((in_channels, *input_size), name="image")
    x = nn.ReLU(name="relu1")(conv_bn(inp, in_channels, 16, 3, 1, "", "1"))
    c_in = 16
    for s, width in enumerate((16, 32, 64), 1):
        for b in range(1, blocks + 1):
            stride = 2 if s > 1 and b == 1 else 1
            p = f"stage{s}_block{b}_"
            y = nn.ReLU(name=p + "relu1")(conv_bn(x, c_in, width, 3, stride, p, "1"))
            y = conv_bn(y, width, width, 3, 1, p, "2")
            if stride != 1 or c_in != width:
                x = conv_bn(x, c_in, width, 1, stride, p + "shortcut_", "")
            x = nn.ReLU(name=p + "relu2")(nn.Add(name=p + "add")([x, y]))
            c_in = width
    x = nn.Flatten(name="flatten")(nn.GlobalAvgPool2d(name="pool")(x))
    out = nn.Linear(64, num_classes, name="fc", **kw)(x)
    return nn.Model(inp, out, name=f"resnet{depth}")


def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: IntPair = (32, 32),
    *,
    dtype: DTypeLike = np.float32,
    rng: RNGLike = None,
) -> nn.Model:
    """ResNet-20 (:func:`resnet` with ``depth=20``: 3 blocks per stage, 272,474 parameters
    for 10 classes)."""
    return resnet(20, num_classes, in_channels, input_size, dtype=dtype, rng=rng)


#: ``mobilenet_tiny``'s blocks: (output channels, stride of the depthwise convolution).
MOBILENET_TINY_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))

#: The activations ``mobilenet_tiny`` offers (MobileNetV2's ReLU6, MobileNetV3's hardswish).
MOBILENET_ACTIVATIONS = {"relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def mobilenet_tiny(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: IntPair = (28, 28),
    *,
    inverted_residual: bool = False,
    expansion: int = 4,
    activation: str = "relu6",
    dtype: DTypeLike = np.float32,
    rng: RNGLike = None,
) -> nn.Model:
    """A small MobileNet for 28x28 or 32x32 images, as a graph model: depthwise-separable
    blocks (MobileNet V1, Howard et al. 2017), or MobileNetV2's inverted residual blocks
    (Sandler et al., CVPR 2018) with ``inverted_residual=True``.

    The stem is a 3x3 convolution with 16 filters (stride 1), BatchNorm and the activation.
    Five blocks follow, with output channels and depthwise strides
    :data:`MOBILENET_TINY_BLOCKS`: 16 (s1), 32 (s2), 32 (s1), 64 (s2), 64 (s1) -- on 28x28
    inputs the blocks run at 28, 14, 14, 7 and 7 pixels.  Then a 1x1 convolution to 128
    channels with BatchNorm and the activation, global average pooling and a linear
    classifier.  Every convolution is followed by BatchNorm and has no bias.

    - **Depthwise-separable block** (default): depthwise 3x3 convolution (``groups`` equal
      to the channels, padding 1, the block's stride) - BN - activation, then a pointwise
      1x1 convolution to the output channels - BN - activation.
    - **Inverted residual block** (``inverted_residual=True``): a pointwise 1x1 expansion
      to ``expansion`` times the input channels - BN - activation (left out in the first
      block, whose expansion is 1 as in MobileNetV2), the depthwise 3x3 convolution - BN -
      activation, and a linear 1x1 projection to the output channels - BN (no activation).
      Where the stride is 1 and the channels are kept (blocks 1, 3 and 5), the block's input
      is added to its output (``nn.Add``).

    Parameters
    ----------
    num_classes, in_channels : int
        Default 10 classes of 1-channel images (Fashion-MNIST); 3 for RGB.
    input_size : int or (int, int), default (28, 28)
        The height and width the model takes (any size >= 1; global pooling makes the
        classifier independent of it).
    inverted_residual : bool, default False
        MobileNetV2's inverted residual blocks instead of depthwise-separable ones.
    expansion : int, default 4
        The inverted residual blocks' expansion factor (MobileNetV2: 6); unused otherwise.
    activation : {'relu6', 'hardswish'}
        After each BatchNorm except an inverted residual block's projection.
    dtype : float32 or float64
    rng : numpy Generator, int or None
        Seeds the layers' default (PyTorch) initialization.

    Returns
    -------
    Model
        Named ``mobilenet_tiny``; layers ``stem_conv``, ``stem_bn``, ``stem_act``, then per
        block ``block{b}_`` + (``expand_conv``, ``expand_bn``, ``expand_act``), ``dw_conv``,
        ``dw_bn``, ``dw_act``, ``pw_conv``, ``pw_bn`` (``pw_act``; ``add``), then
        ``head_conv``, ``head_bn``, ``head_act``, ``pool``, ``flatten``, ``fc``.  Its
        ``state_dict`` keys are ``<layer name>.weight`` etc., as a PyTorch module holding
        the same layers as attributes of those names.

    Notes
    -----
    For 10 classes and one input channel: 20,026 parameters (depthwise-separable) or 74,570
    (inverted residual, expansion 4); 1.6 and 7.0 million multiply-adds per 28x28 image.
    The depthwise convolutions run cnncore's depthwise kernels (:func:`cnncore.conv_algorithm`
    ``"depthwise"``).

    See Also
    --------
    resnet : the CIFAR ResNets, the other graph models here.

    Examples
    --------
    >>> from cnncore import models
    >>> model = models.mobilenet_tiny(rng=0)
    >>> model.output_shape((2, 1, 28, 28))
    (2, 10)
    >>> models.mobilenet_tiny(in_channels=3, input_size=32, inverted_residual=True,
    ...                       activation="hardswish", rng=0).output_shape((2, 3, 32, 32))
    (2, 10)
    """
    func = "mobilenet_tiny"
    num_classes = check_int(num_classes, "num_classes", func, min_value=1)
    in_channels = check_int(in_channels, "in_channels", func, min_value=1)
    inverted_residual = check_bool(inverted_residual, "inverted_residual", func)
    expansion = check_int(expansion, "expansion", func, min_value=1, max_value=64)
    act = MOBILENET_ACTIVATIONS[
        check_choice(activation, "activation", func, tuple(MOBILENET_ACTIVATIONS))
    ]
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    gen = nn.init.get_rng(rng)
    kw: dict[str, Any] = dict(dtype=dtype, rng=gen)

    def conv_bn_act(
        x: nn.Node, c_in: int, c_out: int, k: int, stride: int, pre: str, act_on: bool = True
    ) -> nn.Node:
        groups = c_in if pre.endswith("dw_") else 1
        conv = nn.Conv2d(
            c_in, c_out, k, stride, k // 2, groups=groups, bias=False, name=pre + "conv", **kw
        )
        x = nn.BatchNorm2d(c_out, dtype=dtype, name=pre + "bn")(conv(x))
        return act(name=pre + "act")(x) if act_on else x

    inp = nn.Input((in_channels, *input_size), name="image")
    x = conv_bn_act(inp, in_channels, 16, 3, 1, "stem_")
    c_in = 16
    for b, (c_out, stride) in enumerate(MOBILENET_TINY_BLOCKS, 1):
        p = f"block{b}_"
        if inverted_residual:
            hidden = c_in * (expansion if b > 1 else 1)
            y = x if hidden == c_in else conv_bn_act(x, c_in, hidden, 1, 1, p + "expand_")
            y = conv_bn_act(y, hidden, hidden, 3, stride, p + "dw_")
            y = conv_bn_act(y, hidden, c_out, 1, 1, p + "pw_", act_on=False)
            x = nn.Add(name=p + "add")([x, y]) if stride == 1 and c_in == c_out else y
        else:
            x = conv_bn_act(x, c_in, c_in, 3, stride, p + "dw_")
            x = conv_bn_act(x, c_in, c_out, 1, 1, p + "pw_")
        c_in = c_out
    x = conv_bn_act(x, c_in, 128, 1, 1, "head_")
    x = nn.Flatten(name="flatten")(nn.GlobalAvgPool2d(name="pool")(x))
    out = nn.Linear(128, num_classes, name="fc", **kw)(x)
    return nn.Model(inp, out, name="mobilenet_tiny")


def _resnet_factory(depth: int) -> Callable[..., nn.Model]:
    def factory(**kwargs: Any) -> nn.Model:
        return resnet(depth, **kwargs)

    factory.__name__ = f"resnet{depth}"
    return factory


MODELS = {
    "lenet": lenet5,
    "lenet5": lenet5,
    "cnn": simple_cnn,
    "resnet20": resnet20,
    **{f"resnet{d}": _resnet_factory(d) for d in RESNET_DEPTHS if d != 20},
    "mobilenet_tiny": mobilenet_tiny,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name: ``'lenet'`` (LeNet-5), ``'cnn'``, ``'resnet20'``
    (``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``) or ``'mobilenet_tiny'``."""
    try:
        factory = MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown model. Expected one of {sorted(MODELS)}. Received: model={name!r}"
        ) from None
    return factory(**kwargs)
