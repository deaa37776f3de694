"""The PyTorch twin of a cnncore model: the equivalent ``torch.nn`` module with the same
weights (through ``state_dict``), for the inference benchmark and the cross-check tests.

:data:`TORCH_TWINS` maps a cnncore registry name to a function ``(layer, torch) -> torch
module`` built from the layer's config; a container's twin holds its children's twins, so
``twin.load_state_dict(model.state_dict())`` needs the same keys on both sides (checked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnncore import nn
from cnncore.nn.module import registered_name

__all__ = ["TORCH_TWINS", "torch_twin"]


def _pair(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _conv(layer: Any, torch: Any) -> Any:
    c = layer.get_config()
    return torch.nn.Conv2d(
        c["in_channels"],
        c["out_channels"],
        _pair(c["kernel_size"]),
        stride=_pair(c["stride"]),
        padding=_pair(c["padding"]),
        dilation=_pair(c["dilation"]),
        groups=c["groups"],
        bias=c["bias"],
        padding_mode=c["padding_mode"],
    )


def _batch_norm(kind: str) -> Callable[[Any, Any], Any]:
    def make(layer: Any, torch: Any) -> Any:
        c = layer.get_config()
        return getattr(torch.nn, kind)(
            c["num_features"],
            eps=c["eps"],
            momentum=c["momentum"],
            affine=c["affine"],
            track_running_stats=c["track_running_stats"],
        )

    return make


def _max_pool(layer: Any, torch: Any) -> Any:
    c = layer.get_config()
    return torch.nn.MaxPool2d(
        _pair(c["kernel_size"]),
        _pair(c["stride"]),
        _pair(c["padding"]),
        _pair(c["dilation"]),
        ceil_mode=c["ceil_mode"],
    )


def _avg_pool(layer: Any, torch: Any) -> Any:
    c = layer.get_config()
    return torch.nn.AvgPool2d(
        _pair(c["kernel_size"]),
        _pair(c["stride"]),
        _pair(c["padding"]),
        ceil_mode=c["ceil_mode"],
        count_include_pad=c["count_include_pad"],
        divisor_override=c["divisor_override"],
    )


def _merge(kind: str) -> Callable[[Any, Any], Any]:
    """A merge layer's twin: a torch module over a list of tensors."""

    def make(layer: Any, torch: Any) -> Any:
        class Merge(torch.nn.Module):
            def forward(self, xs: list) -> Any:
                if kind == "Concatenate":
                    return torch.cat(xs, dim=layer.dim)
                out = xs[0]
                for x in xs[1:]:
                    out = out + x if kind == "Add" else out * x
                return out

        return Merge()

    return make


def _graph(model: Any, torch: Any) -> Any:
    """A graph model's twin: a ``ModuleDict`` of its layers' twins under the layers' names
    (so the ``state_dict`` keys are the model's, ``<layer name>.weight``, also nested), run
    in the model's step order over the same value slots."""
    steps = [(layer.name, ins, multi, out) for layer, ins, multi, out, *_ in model._steps]
    n_slots, in_slots, out_slots = model._n_slots, model._in_slots, model._out_slots
    multi_in, multi_out = model._multi_in, model._multi_out

    class Graph(torch.nn.ModuleDict):
        def forward(self, x: Any) -> Any:
            vals: list[Any] = [None] * n_slots
            for s, v in zip(in_slots, x if multi_in else [x], strict=True):
                vals[s] = v
            for name, ins, multi, out in steps:
                vals[out] = self[name]([vals[s] for s in ins] if multi else vals[ins[0]])
            outs = [vals[s] for s in out_slots]
            return outs if multi_out else outs[0]

    return Graph({layer.name: _twin(layer, torch) for layer in model.layers})


TORCH_TWINS: dict[str, Callable[[Any, Any], Any]] = {
    "Conv2d": _conv,
    "Linear": lambda m, torch: torch.nn.Linear(m.in_features, m.out_features, m.bias is not None),
    "BatchNorm1d": _batch_norm("BatchNorm1d"),
    "BatchNorm2d": _batch_norm("BatchNorm2d"),
    "SyncBatchNorm": _batch_norm("SyncBatchNorm"),
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": lambda m, torch: torch.nn.AdaptiveAvgPool2d(tuple(m.output_size)),
    "GlobalAvgPool2d": lambda m, torch: torch.nn.AdaptiveAvgPool2d(1),
    "Flatten": lambda m, torch: torch.nn.Flatten(m.start_dim, m.end_dim),
    "Dropout": lambda m, torch: torch.nn.Dropout(m.p),
    "ReLU": lambda m, torch: torch.nn.ReLU(),
    "LeakyReLU": lambda m, torch: torch.nn.LeakyReLU(m.negative_slope),
    "Sigmoid": lambda m, torch: torch.nn.Sigmoid(),
    "Tanh": lambda m, torch: torch.nn.Tanh(),
    "Softmax": lambda m, torch: torch.nn.Softmax(m.dim),
    "LogSoftmax": lambda m, torch: torch.nn.LogSoftmax(m.dim),
    "Sequential": lambda m, torch: torch.nn.Sequential(*(_twin(c, torch) for c in m.children())),
    "Add": _merge("Add"),
    "Multiply": _merge("Multiply"),
    "Concatenate": _merge("Concatenate"),
    "Identity": lambda m, torch: torch.nn.Identity(),
    "Model": _graph,
}
"""cnncore registry name -> ``(layer, torch) -> torch.nn.Module`` without weights."""


def _twin(layer: nn.Module, torch: Any) -> Any:
    name = registered_name(type(layer))
    make = TORCH_TWINS.get(name or "")
    if make is None:
        raise ValueError(f"torch_twin(): no PyTorch twin for {type(layer).__name__}")
    return make(layer, torch)


def torch_twin(model: nn.Module) -> Any:
    """The ``torch.nn`` module equivalent to ``model``, holding a copy of its weights and
    buffers (same dtype), in ``model``'s train/eval mode."""
    import torch

    twin = _twin(model, torch)
    state = model.state_dict()
    twin = twin.to(dtype=getattr(torch, model.dtype.name))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    twin.train(model.training)
    return twin
