"""Speed options shared by the backends: ``torch.compile`` with a clean eager fallback, and channels-last.

Both change how fast a network runs, never what it computes (beyond float rounding), so neither enters a
config hash or a model fingerprint.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn


def _signature(args: tuple, kwargs: dict) -> tuple:
    """What decides whether a compiled graph (and its backward) is reused: shapes, dtypes, devices, layouts."""
    def describe(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device.type, value.requires_grad,
                    value.is_contiguous(memory_format=torch.channels_last) and not value.is_contiguous())
        if isinstance(value, (list, tuple)):
            return tuple(describe(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, describe(v)) for k, v in value.items()))
        return type(value).__name__
    return describe(args), describe(kwargs)


class CompiledWithFallback:
    """``module`` compiled with ``torch.compile`` (inductor), falling back to eager where compilation fails.

    Compilation is lazy and its backward is compiled at the first ``backward()``, which in the optimizer
    happens far from the call. So each new input signature (shapes, dtypes, devices, layout) is first probed
    here with a forward and, when any input needs a gradient, a backward of the output's sum on detached
    copies of the inputs. If the probe raises (no C++ compiler, an inductor bug, an unsupported op), the
    error is reported once as a ``RuntimeWarning`` naming it and every later call runs ``module`` eagerly.
    An error that eager execution raises too (a bad input) is raised as eager raises it.
    """

    def __init__(self, module: nn.Module, *, name: str, **compile_options):
        self.module = module
        self.name = name
        self.compiled = torch.compile(module, **compile_options)
        # Input signatures the compiled module has run forward and backward on.
        self.probed: set[tuple] = set()
        # Why compilation was abandoned (None while it works).
        self.failure: str | None = None

    def _probe(self, args: tuple, kwargs: dict) -> None:
        def detached(value):
            if isinstance(value, torch.Tensor):
                return value.detach().clone().requires_grad_(value.requires_grad)
            return value
        probe_args = tuple(detached(a) for a in args)
        probe_kwargs = {k: detached(v) for k, v in kwargs.items()}
        out = self.compiled(*probe_args, **probe_kwargs)
        if out.requires_grad:
            out.float().sum().backward()

    def __call__(self, *args, **kwargs):
        if self.failure is None:
            signature = _signature(args, kwargs)
            try:
                if signature not in self.probed:
                    self._probe(args, kwargs)
                    self.probed.add(signature)
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any compile failure falls back; eager re-raises real input errors
                result = self.module(*args, **kwargs)  # raises here when the input itself is bad
                self.failure = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                warnings.warn(f"torch.compile of {self.name} failed ({self.failure}); running it eagerly",
                              RuntimeWarning, stacklevel=2)
                return result
        return self.module(*args, **kwargs)


def compile_with_fallback(module: nn.Module, *, name: str, **compile_options) -> Callable[..., torch.Tensor]:
    """``torch.compile(module, **compile_options)`` that falls back to eager execution when compiling fails.

    See :class:`CompiledWithFallback`. ``name`` names the module in the fallback warning.
    """
    return CompiledWithFallback(module, name=name, **compile_options)


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the channels-last memory layout when it is 4-D (other tensors unchanged)."""
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.ndim == 4 else tensor
