import enum

class Status(enum.IntEnum):
    CNN_OK = 0
    CNN_ERR_NOMEM = -1
    CNN_ERR_INDEX = -2

class Activation(enum.IntEnum):
    OP_RELU = 1
    OP_LEAKY_RELU = 2
    OP_SIGMOID = 3
    OP_TANH = 4
    OP_RELU_BW = 11
    OP_LEAKY_RELU_BW = 12
    OP_SIGMOID_BW = 13
    OP_TANH_BW = 14
    OP_GELU = 21
    OP_GELU_TANH = 22
    OP_SILU = 23
    OP_ELU = 24
    OP_HARDSWISH = 25
    OP_HARDSIGMOID = 26
    OP_SOFTPLUS = 27
    OP_MISH = 28
    OP_RELU6 = 29
    OP_GELU_BW = 31
    OP_GELU_TANH_BW = 32
    OP_SILU_BW = 33
    OP_ELU_BW = 34
    OP_HARDSWISH_BW = 35
    OP_HARDSIGMOID_BW = 36
    OP_SOFTPLUS_BW = 37
    OP_MISH_BW = 38
    OP_RELU6_BW = 39

class ConvAlgorithm(enum.IntEnum):
    ALGO_GEMM = 1
    ALGO_DIRECT = 2
    ALGO_WINOGRAD = 3
    ALGO_DEPTHWISE = 4
    ALGO_BLOCKED = 5
    ALGO_WINOGRAD4 = 6
    ALGO_ROWS = 7

class Loss(enum.IntEnum):
    LOSS_MSE = 1
    LOSS_L1 = 2
    LOSS_BCE_WITH_LOGITS = 3
    LOSS_BCE = 4
    LOSS_MSLE = 5
    LOSS_MAPE = 6

class LossDomain(enum.IntEnum):
    LOSS_BAD_INPUT = 1
    LOSS_BAD_TARGET = 2

class PadMode(enum.IntEnum):
    PAD_CONSTANT = 0
    PAD_REPLICATE = 1
    PAD_REFLECT = 2
    PAD_CIRCULAR = 3
