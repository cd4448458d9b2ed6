"""Where training runs: the compute device of this process and the process group torchrun describes.

``accelerator`` is what a user asks for: ``"auto"`` (a CUDA GPU when there is one, else the CPU),
``"cuda"`` or ``"cpu"``. Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK`` and the
process group uses ``nccl``; on the CPU it uses ``gloo``.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from tokensift.errors import InvalidArgumentError

__all__ = ["ACCELERATORS", "resolve_device", "backend_for", "module_device", "init_distributed", "shutdown_distributed",
           "world"]

ACCELERATORS = ("auto", "cuda", "cpu")


def _local_rank() -> int:
    text = os.environ.get("LOCAL_RANK", "0")
    try:
        rank = int(text)
    except ValueError:
        raise InvalidArgumentError(f"LOCAL_RANK must be a non-negative integer, not {text!r}") from None
    if rank < 0:
        raise InvalidArgumentError(f"LOCAL_RANK must be a non-negative integer, not {text!r}")
    return rank


def resolve_device(accelerator: str = "auto") -> torch.device:
    """The device this process computes on: ``cuda:LOCAL_RANK`` for a GPU, else ``cpu``."""
    if accelerator not in ACCELERATORS:
        raise InvalidArgumentError(f"accelerator must be one of {', '.join(ACCELERATORS)}, not {accelerator!r}")
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InvalidArgumentError("accelerator 'cuda' was asked for, but this PyTorch build sees no CUDA GPU "
                                   f"(torch {torch.__version__})")
    rank, count = _local_rank(), torch.cuda.device_count()
    if rank >= count:
        raise InvalidArgumentError(f"LOCAL_RANK {rank} has no GPU of its own: this machine has {count} "
                                   f"(start at most {count} processes per node)")
    return torch.device("cuda", rank)


def backend_for(device: torch.device) -> str:
    """The collective backend for processes computing on ``device``."""
    return "nccl" if device.type == "cuda" else "gloo"


def module_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (its buffers when it has none; the CPU when it has neither)."""
    module = getattr(model, "module", model)
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def init_distributed(device: torch.device | None = None) -> bool:
    """Join the process group torchrun describes; return True when running distributed.

    ``device`` picks the backend (``nccl`` for a GPU, which also becomes this process's current CUDA
    device; ``gloo`` otherwise).
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device))
    return True


def shutdown_distributed(*, wait: bool = True) -> None:
    """Leave the process group (if any), after every process got here when ``wait``: a process that exits
    while its group is alive can take the collective library's threads down with it (an abort instead of
    exit code 0). Pass ``wait=False`` on an error path, where the other processes may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
