"""cnncore's op families: one module each, next to its Cython kernel and ``.pyi`` stub.

========================  ===================  =============================================
family module             kernel               ops
========================  ===================  =============================================
:mod:`.conv`              ``_conv.pyx``        conv2d and its gradients, im2col, col2im
:mod:`.linear`            ``_linear.pyx``      linear and its gradients
:mod:`.activation`        ``_activation.pyx``  relu ... mish, softmax, dropout2d, gradients
:mod:`.loss`              ``_loss.pyx``        cross entropy, BCE, regression losses
:mod:`.pool`              ``_pool.pyx``        max / avg / adaptive / Lp pooling, unpooling
:mod:`.pad`               ``_pad.pyx``         pad2d and its gradient
:mod:`.norm`              ``_norm.pyx``        batch / group / layer / instance norm, grads
:mod:`.resize`            ``_resize.pyx``      interpolate, pixel_(un)shuffle and gradients
========================  ===================  =============================================

:mod:`.conv_dispatch` chooses the convolution algorithm; ``_common`` holds the Python-side
checks several families share.  The public face is :mod:`cnncore.functional`.
"""
