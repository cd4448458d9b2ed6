"""Training loops: dense training, pruning fine-tuning with a dense teacher, evaluation, DDP.

The loops run on the device of the model's parameters (move the model first: see
:mod:`tokensift.sw.placement`); batches follow it. Run under ``torchrun --nproc-per-node N`` they shard the
data with a ``DistributedSampler`` and average gradients with DDP (``nccl`` on GPUs, ``gloo`` on CPUs):
call :func:`init_distributed` with the device first.

The loss is a method's criterion, called as ``criterion(student, teacher, images, labels) -> (loss,
parts)``; the student and criterion are wrapped together so DDP sees every forward pass.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tokensift.checks import check_count
from tokensift.errors import TrainingDivergedError

from .checkpoint import save_checkpoint
from .data import random_affine
from .placement import init_distributed, module_device, world

__all__ = ["TrainConfig", "TrainResult", "fit", "evaluate", "init_distributed", "is_main_process",
           "param_groups"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step per process.
        lr: peak learning rate of the selector parameters (and of the backbone for dense training).
        min_lr: learning rate at the end of the cosine schedule.
        weight_decay: AdamW weight decay (not applied to biases, norms, tokens and position embeddings).
        warmup_epochs: linear warm-up length.
        frozen_epochs: epochs during which the backbone does not move (learning rate 0).
        backbone_lr_scale: backbone learning rate as a fraction of ``lr`` after the frozen epochs.
        augment: random affine augmentation of the images of each batch.
        seed: seeds initial shuffling and augmentation.
        max_steps: stop after this many steps (for quick checks); None for full epochs.
        grad_clip: max gradient norm, or None.
        amp: run forward passes under bfloat16 autocast (on GPUs that have it; the loss stays float32).
        workers: data-loading processes (0 loads in the training process; image folders want several).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    frozen_epochs: int = 0
    backbone_lr_scale: float = 1.0
    augment: bool = True
    seed: int = 0
    max_steps: int | None = None
    grad_clip: float | None = 5.0
    amp: bool = False
    workers: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            check_count(name, getattr(self, name), numpy=False)
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, not {self.lr!r}")
        check_count("workers", self.workers, zero=True, numpy=False)


@dataclass
class TrainResult:
    accuracy: float | None
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def is_main_process() -> bool:
    return world()[0] == 0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: (backbone | selectors) x (decay | no decay); ``role`` tags the groups."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = "selector" if name.startswith("selectors.") else "backbone"
        no_decay = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        groups.setdefault((role, no_decay), []).append(p)
    return [{"params": ps, "role": role, "weight_decay": 0.0 if nd else weight_decay}
            for (role, nd), ps in groups.items()]


class _Objective(nn.Module):
    """Student and criterion in one module, so DDP's forward hooks see the whole training forward."""

    def __init__(self, student: nn.Module, criterion: nn.Module):
        super().__init__()
        self.student = student
        self.criterion = criterion

    def forward(self, images: Tensor, labels: Tensor, teacher: nn.Module | None):
        return self.criterion(self.student, teacher, images, labels)


#: steps between progress-bar loss readings (each reading waits for the device)
_LOSS_EVERY = 20


def _lr_factor(step: float, total: int, warmup: float, lr: float, min_lr: float) -> float:
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1.0, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256, workers: int = 0) -> float:
    """Top-1 accuracy (in [0, 1]) on the inference (gather) path, on the model's device; sharded over
    processes if distributed."""
    module = getattr(model, "module", model)
    device = module_device(module)
    was_training = module.training
    module.eval()
    rank, size = world()
    subset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), size)))
    correct = torch.zeros(2, dtype=torch.float64, device=device)  # on the device: nccl reduces GPU tensors
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        correct[0] += (module(images).argmax(dim=-1) == labels).sum()
        correct[1] += len(labels)
    if size > 1:
        dist.all_reduce(correct)
    module.train(was_training)
    return float(correct[0] / correct[1])


def fit(model: nn.Module, criterion: nn.Module, train_set: Dataset, cfg: TrainConfig,
        test_set: Dataset | None = None, teacher: nn.Module | None = None,
        progress: bool = True, description: str = "train", checkpoint_dir: str | Path | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` with ``criterion`` on ``train_set``; evaluate on ``test_set`` after every epoch.

    The backbone learning rate is 0 for ``cfg.frozen_epochs`` epochs and ``cfg.backbone_lr_scale * lr``
    afterwards; selector parameters always get the full schedule. With ``checkpoint_dir`` the main process
    writes ``last.pth`` after every epoch. Training runs on the device of ``model``'s parameters; the
    teacher and the criterion are moved there.
    """
    rank, size = world()
    device = module_device(model)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    criterion.to(device)
    objective: nn.Module = _Objective(model, criterion)
    if size > 1:
        ids = [device.index] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    sampler = DistributedSampler(train_set, num_replicas=size, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(train_set)} images over {size} processes) is smaller "
                         f"than one batch of {cfg.batch_size}")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    groups = param_groups(model, cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    warmup = cfg.warmup_epochs * steps_per_epoch
    history: list[dict] = []
    step, t0 = 0, time.perf_counter()
    show = progress and rank == 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    accuracy = None
    with Progress(*columns, console=Console(file=sys.stderr), disable=not show, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")
        for epoch in range(cfg.epochs):
            if step >= total:
                break
            sampler.set_epoch(epoch)
            model.train()
            frozen = epoch < cfg.frozen_epochs
            # the running loss stays on the device: reading it every step would wait for the GPU each time
            running, n_batches = torch.zeros((), dtype=torch.float64, device=device), 0
            for images, labels in loader:
                if step >= total:
                    break
                lr = _lr_factor(step, total, warmup, cfg.lr, cfg.min_lr)
                for g in opt.param_groups:
                    scale = 1.0 if g["role"] == "selector" else (0.0 if frozen else cfg.backbone_lr_scale)
                    g["lr"] = lr * scale
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if cfg.augment:
                    images = random_affine(images, generator=gen)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    loss, parts = objective(images, labels, teacher)
                opt.zero_grad(set_to_none=True)
                loss.float().backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                running += loss.detach()
                n_batches += 1
                if show and (n_batches % _LOSS_EVERY == 0 or step >= total):
                    bar.update(task, info=f"epoch {epoch + 1} loss {float(running) / n_batches:.3f}")
                bar.update(task, advance=1)
            record = {"epoch": epoch + 1, "step": step, "loss": float(running) / max(1, n_batches)}
            if not math.isfinite(record["loss"]):
                # a NaN model would train on silently and be saved and reported as if it were one
                raise TrainingDivergedError(f"training diverged: the mean loss of epoch {epoch + 1} is "
                                            f"{record['loss']}; lower the learning rate (now {cfg.lr:g})")
            bar.update(task, info=f"epoch {epoch + 1} loss {record['loss']:.3f}")
            if test_set is not None:
                accuracy = evaluate(model, test_set, workers=cfg.workers)
                record["accuracy"] = accuracy
                bar.update(task, info=f"epoch {epoch + 1} loss {record['loss']:.3f} acc {accuracy:.4f}")
            history.append(record)
            if checkpoint_dir is not None and rank == 0:
                save_checkpoint(Path(checkpoint_dir) / "last.pth", model, epoch=epoch + 1, step=step,
                                accuracy=accuracy)
            if on_epoch is not None:
                on_epoch(record)
    return TrainResult(accuracy=accuracy, steps=step, seconds=time.perf_counter() - t0, history=history)
