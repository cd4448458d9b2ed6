"""The end-to-end recipe behind ``tokensift train``: dense model (trained or cached), then pruning fine-tuning.

1. Data: the bundled MNIST split, or an ImageNet-style folder (``root/train`` + ``root/val``, or class
   folders split with a fixed seed).
2. Dense model: loaded from ``dense_checkpoint``; else from the cache (keyed by model, data, seed and
   epochs); else trained (optionally starting from a DeiT/timm ``checkpoint``) and cached.
3. Pruning (method other than "none"): the student starts from the dense weights, the dense model is the
   teacher, and the method's criterion and freezing schedule apply.
4. Accuracy and FLOPs of both models are measured and returned as a dict.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import extract_state_dict, load_checkpoint, read_checkpoint, save_checkpoint
from .data import load_image_folder, load_mnist
from .flops import count_flops
from .methods import get_method
from .placement import init_distributed, resolve_device
from .registry import create_model, get_config
from .train import TrainConfig, evaluate, fit, is_main_process

__all__ = ["PipelineConfig", "default_cache_dir", "run_pipeline"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tokensift"


@dataclass
class PipelineConfig:
    model: str = "vit_mnist_patch4_28"
    method: str = "none"
    keep_ratio: float | None = None
    epochs: int = 5  # fine-tuning epochs (dense epochs when method is "none")
    dense_epochs: int = 40
    batch_size: int = 64  # global: split over the processes under torchrun
    lr: float = 2e-3  # dense training
    finetune_lr: float = 1e-3
    seed: int = 0
    out: Path | None = None
    data: Path | None = None
    checkpoint: Path | None = None  # DeiT / timm weights to start dense training from
    dense_checkpoint: Path | None = None  # a trained dense model: skips dense training
    cache_dir: Path | None = None
    use_cache: bool = True
    max_steps: int | None = None
    progress: bool = True
    threads: int | None = 1  # intra-op threads per process; None leaves torch's default
    accelerator: str = "auto"  # "auto" (a GPU when there is one), "cuda" or "cpu": see tokensift.sw.placement
    amp: bool = False  # bfloat16 autocast in training
    workers: int = 0  # data-loading processes per training process
    skip_bad_images: bool = False  # leave out unreadable images of --data (counted) instead of refusing
    # initialisation for training from scratch: Xavier ("jax") weights and a sine-cosine position embedding.
    # On 4,000 MNIST images the timm initialisation learns positions far more slowly (measured: 26% vs 46%
    # test accuracy after 150 steps; 90.3% after 40 epochs). None keeps the model's default.
    weight_init: str | None = "jax"
    pos_embed_init: str | None = "sincos"
    # computation-aware training: an object with prepare(student, criterion, train_set) -> criterion (sets the
    # budget and keep ratios) and report(student, test_set) -> dict, e.g. tokensift.coopt.latency_train.LatencyPlan
    budget_plan: object | None = None


def _log(msg: str) -> None:
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def _epoch_logger(name: str, cfg: PipelineConfig):
    def log(record: dict) -> None:
        if not cfg.progress:  # the progress bar already shows the loss
            _log(f"{name}: epoch {record['epoch']} step {record['step']} loss {record['loss']:.4f}")

    return log


def _datasets(cfg: PipelineConfig, model_cfg):
    if cfg.data is None:
        if (model_cfg.img_size, model_cfg.in_chans, model_cfg.num_classes) != (28, 1, 10):
            raise ValueError(f"the bundled MNIST data needs a 28x28, 1-channel, 10-class model; "
                             f"{cfg.model} is {model_cfg.img_size}x{model_cfg.img_size} with "
                             f"{model_cfg.in_chans} channels (pass --data for your own images)")
        train, test = load_mnist()
        return train, test, 10, "mnist", 0
    train, test = load_image_folder(cfg.data, model_cfg.img_size, model_cfg.in_chans, skip_bad=cfg.skip_bad_images)
    base = getattr(train, "dataset", train)
    ident = hashlib.sha1(str(Path(cfg.data).resolve()).encode()).hexdigest()[:10]
    skipped = {p for ds in (train, test) for p in getattr(getattr(ds, "dataset", ds), "skipped", [])}
    if skipped:
        _log(f"skipped {len(skipped)} unreadable images of {cfg.data} (--skip-bad-images)")
    return train, test, len(base.classes), f"folder-{ident}", len(skipped)


def _load_start_weights(model, path: Path) -> None:
    """DeiT/timm weights into a dense model; the classifier is re-initialised if the class count differs."""
    state = extract_state_dict(read_checkpoint(path))
    head = state.get("head.weight")
    if head is not None and head.shape != model.head.weight.shape:
        _log(f"checkpoint head has {head.shape[0]} classes, the data {model.num_classes}: "
             f"re-initialising the head")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    load_checkpoint(model, {"model": state}, strict=False)


def _measured_flops(model, test_set, max_images: int = 1000):
    """FLOPs of the trained model: the static schedule, or for adaptive selectors (a per-image count, as
    AS-ViT and SaiT) the mean over the first ``max_images`` test images."""
    if not any(getattr(sel, "adaptive", False) for _, sel in model.stage_selectors()):
        return count_flops(model)
    images = torch.stack([test_set[i][0] for i in range(min(max_images, len(test_set)))])
    return count_flops(model, images)


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run the recipe; return a JSON-ready dict of accuracies, FLOPs and checkpoint paths."""
    if cfg.threads is not None:
        # small models train fastest single-threaded, and a shared or oversubscribed CPU makes OpenMP
        # threads wait for each other (measured: 13 s vs 0.8 s per step); scale out with torchrun instead
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.accelerator)
    distributed = init_distributed(device)
    world = torch.distributed.get_world_size() if distributed else 1
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} must be divisible by the number of processes {world}")
    per_process_batch = cfg.batch_size // world
    spec = get_method(cfg.method)
    init = {"weight_init": cfg.weight_init, "pos_embed_init": cfg.pos_embed_init}
    model_cfg = get_config(cfg.model, **init)
    train_set, test_set, num_classes, data_id, skipped = _datasets(cfg, model_cfg)
    out = Path(cfg.out) if cfg.out is not None else None
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
    dense_epochs = cfg.epochs if cfg.method == "none" else cfg.dense_epochs

    dense = create_model(cfg.model, num_classes=num_classes, **init).to(device)
    arch = hashlib.sha1(repr(model_cfg).encode()).hexdigest()[:8]  # a changed configuration misses the cache
    dense_key = (f"{cfg.model}-{arch}-{data_id}-c{num_classes}-seed{cfg.seed}-e{dense_epochs}"
                 f"-lr{cfg.lr:g}-b{cfg.batch_size}" + (f"-s{cfg.max_steps}" if cfg.max_steps else "")
                 + (f"-init{hashlib.sha1(str(cfg.checkpoint).encode()).hexdigest()[:8]}" if cfg.checkpoint
                    else "") + "-dense.pth")
    cached = cache_dir / dense_key
    result: dict = {"model": cfg.model, "method": cfg.method, "seed": cfg.seed, "world_size": world,
                    "device": str(device)}
    if cfg.data is not None:
        result["skipped_images"] = skipped
    if cfg.dense_checkpoint is not None:
        load_checkpoint(dense, cfg.dense_checkpoint, strict=True)
        dense_path, dense_source = Path(cfg.dense_checkpoint), "given"
    elif cfg.use_cache and cached.is_file():
        load_checkpoint(dense, cached, strict=True)
        dense_path, dense_source = cached, "cache"
        _log(f"dense model from cache: {cached}")
    else:
        if cfg.checkpoint is not None:
            _load_start_weights(dense, Path(cfg.checkpoint))
        tc = TrainConfig(epochs=dense_epochs, batch_size=per_process_batch, lr=cfg.lr, seed=cfg.seed,
                         max_steps=cfg.max_steps, warmup_epochs=min(1.0, dense_epochs / 4), amp=cfg.amp,
                         workers=cfg.workers)
        res = fit(dense, spec.build_criterion(1.0, 0) if cfg.method == "none"
                  else get_method("none").build_criterion(1.0, 0), train_set, tc, test_set=None,
                  progress=cfg.progress, description="dense", on_epoch=_epoch_logger("dense", cfg),
                  checkpoint_dir=None if out is None else out / "dense")
        result["dense_train_seconds"] = res.seconds
        # the path reported is one that was written: the cache's, --out's, or none with --no-cache alone
        dense_path, dense_source = (cached if cfg.use_cache else None), "trained"
        if is_main_process():
            if cfg.use_cache:
                save_checkpoint(cached, dense, seed=cfg.seed, epochs=dense_epochs, data=data_id)
            if out is not None:
                dense_path = save_checkpoint(out / "dense.pth", dense, seed=cfg.seed, epochs=dense_epochs,
                                             data=data_id)
    dense_acc = evaluate(dense, test_set, workers=cfg.workers)
    dense_flops = count_flops(dense)
    result.update(dense_accuracy=dense_acc, dense_gflops=dense_flops.gflops,
                  dense_checkpoint=None if dense_path is None else str(dense_path), dense_source=dense_source)
    _log(f"dense: accuracy {dense_acc:.4f}, {dense_flops.gflops:.4f} GFLOPs")

    if cfg.method == "none":
        model, acc, flops = dense, dense_acc, dense_flops
        result["keep"] = 1.0
        ckpt = dense_path
    else:
        torch.manual_seed(cfg.seed)  # the selectors' initialisation must not depend on what ran before
        model = create_model(cfg.model, method=cfg.method, keep_ratio=cfg.keep_ratio, num_classes=num_classes,
                             **init).to(device)
        load_checkpoint(model, {"model": dense.state_dict()}, strict=False)  # selectors start fresh
        frozen = round(spec.frozen_fraction * cfg.epochs)
        tc = TrainConfig(epochs=cfg.epochs, batch_size=per_process_batch, lr=cfg.finetune_lr, seed=cfg.seed,
                         frozen_epochs=frozen, backbone_lr_scale=spec.backbone_lr_scale,
                         max_steps=cfg.max_steps, warmup_epochs=min(1.0, cfg.epochs / 4), amp=cfg.amp,
                         workers=cfg.workers)
        criterion = spec.build_criterion(model.keep_ratio, len(model.selectors))
        if cfg.budget_plan is not None:
            criterion = cfg.budget_plan.prepare(model, criterion, train_set)
        res = fit(model, criterion, train_set, tc, test_set=None,
                  teacher=dense if spec.uses_teacher else None, progress=cfg.progress,
                  description=f"{cfg.method} {model.keep_ratio:g}",
                  on_epoch=_epoch_logger(f"{cfg.method} {model.keep_ratio:g}", cfg),
                  checkpoint_dir=None if out is None else out / f"{cfg.method}_keep{model.keep_ratio:g}")
        result["train_seconds"] = res.seconds
        acc = evaluate(model, test_set, workers=cfg.workers)
        flops = _measured_flops(model, test_set)
        result["keep"] = model.keep_ratio
        if cfg.budget_plan is not None:
            result["latency"] = cfg.budget_plan.report(model, test_set)
        ckpt = None
        if out is not None and is_main_process():
            ckpt = save_checkpoint(out / f"{cfg.method}_keep{model.keep_ratio:g}.pth", model, seed=cfg.seed,
                                   epochs=cfg.epochs, accuracy=acc,
                                   dense=None if dense_path is None else str(dense_path))
        _log(f"{cfg.method} keep {model.keep_ratio:g}: accuracy {acc:.4f}, {flops.gflops:.4f} GFLOPs")
    result.update(accuracy=acc, gflops=flops.gflops, ratio=flops.gflops / dense_flops.gflops,
                  tokens=flops.attn_tokens, checkpoint=None if ckpt is None else str(ckpt),
                  test_images=len(test_set))
    return result
