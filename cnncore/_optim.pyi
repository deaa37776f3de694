# Stubs for cnncore/_optim.pyx: fused, in-place optimizer steps on flat contiguous arrays.
import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.float32] | NDArray[np.float64]

def sgd_update(
    data: _F,
    grad: _F,
    buf: _F,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
    n_threads: int,
) -> None: ...
def sgd_update_many(
    data: list[_F],
    grad: list[_F],
    buf: list[_F],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
    block: int,
    n_threads: int,
) -> bool: ...
def adam_update(
    data: _F,
    grad: _F,
    exp_avg: _F,
    exp_avg_sq: _F,
    max_exp_avg_sq: _F | None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step_size: float,
    bias_correction2_sqrt: float,
    n_threads: int,
) -> None: ...
