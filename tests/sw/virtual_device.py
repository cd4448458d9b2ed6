"""Run CPU code as if the model lived on a GPU, and report every op a GPU would reject.

This machine has no GPU, yet ``tokensift train`` must work with the model on ``cuda:N``. On a GPU an op
fails when it mixes a non-scalar CPU tensor with a CUDA one; here every tensor is on the CPU, so such bugs
pass silently. :class:`VirtualDevice` (a ``TorchFunctionMode``) tracks where each tensor *would* be:

* *host*: made by a factory call (``torch.tensor``, ``torch.zeros``, ``torch.rand`` ...) with no device, or
  with the device of a host tensor, or ``"cpu"``; computed only from host tensors; ``.cpu()``; moved with
  ``.to`` to the device of a host tensor.
* *device*: everything else: parameters, buffers and inputs made before the mode started, what a factory
  makes on the device of a device tensor, what ``.to(device)`` moves, what is computed from any of them.

An op that gets a device tensor and a host tensor with at least one dimension (0-dim CPU tensors mix with
CUDA ones in PyTorch) is recorded in :attr:`VirtualDevice.violations` with the repository frame that
called it. Build everything that must follow the model (budgets, criteria, calibration data) inside the
mode; make the model and its inputs before it.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[2]

_FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange,
              torch.rand, torch.randn, torch.randint, torch.randperm, torch.linspace, torch.eye}
_DEVICE_GETTER = torch.Tensor.device.__get__


class VirtualDevice(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self._host: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive so that ids stay unique)
        self._host_devices: dict[int, torch.device] = {}  # torch.device objects read from host tensors
        self._placed_devices: dict[int, torch.device] = {}  # ... and from device tensors (kept alive)
        self.violations: list[str] = []

    def is_host(self, t: torch.Tensor) -> bool:
        return id(t) in self._host

    def _mark(self, out, host: bool) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                if host:
                    self._host[id(t)] = t
                else:
                    self._host.pop(id(t), None)

    def _device_is_host(self, dev) -> bool:
        if isinstance(dev, torch.device):
            # a device object of unknown origin (``Module.to`` re-parses its argument) counts as the accelerator
            return id(dev) in self._host_devices
        if isinstance(dev, str):
            return dev.startswith("cpu")
        if isinstance(dev, torch.Tensor):
            return self.is_host(dev)
        return False

    def _where(self) -> str:
        """The innermost calling frame in this repository's code (not torch's, not this file's)."""
        for frame in reversed(traceback.extract_stack()):
            path = Path(frame.filename)
            if not path.is_file() or path.resolve() == Path(__file__).resolve():
                continue
            path = path.resolve()
            if REPO in path.parents and path.relative_to(REPO).parts[0] != ".venv":
                return f"{path.relative_to(REPO)}:{frame.lineno} {frame.line}"
        return "?"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func == _DEVICE_GETTER:
            # torch.device objects carry no provenance of their own: remember which came from host tensors
            (self._host_devices if self.is_host(args[0]) else self._placed_devices)[id(out)] = out
            return out
        if func in _FACTORIES:
            dev = kwargs.get("device")
            self._mark(out, dev is None or self._device_is_host(dev))
            return out
        name = getattr(func, "__name__", "")
        if name == "to" and isinstance(args[0], torch.Tensor):
            targets = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (torch.device, str, torch.Tensor))]
            host = self._device_is_host(targets[0]) if targets else self.is_host(args[0])
            self._mark(out, host)
            return out
        if name == "__deepcopy__":  # the memo is bookkeeping, not an operand: the copy stays where it was
            self._mark(out, self.is_host(args[0]))
            return out
        if name == "cpu":
            self._mark(out, True)
            return out
        if name == "cuda":
            self._mark(out, False)
            return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if not tensors:
            return out
        host = [t for t in tensors if self.is_host(t)]
        placed = [t for t in tensors if not self.is_host(t)]
        if placed and any(t.dim() > 0 for t in host):
            self.violations.append(f"{name or func}: {self._where()}")
        self._mark(out, bool(host) and not placed)
        return out
