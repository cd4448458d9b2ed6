"""Device placement for GPU training: picking the device and backend, and code that follows the model's device.

No GPU is lent to this machine, so the CUDA path is checked three ways: the device/backend choice with CUDA
mocked, whole training steps under :class:`VirtualDevice` (which reports every op that would mix a CPU
tensor with a GPU one), and the parts that need no data-dependent control flow on the ``meta`` device.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset
from virtual_device import VirtualDevice

from tokensift.coopt.latency_train import LatencyPlan, measure_latency
from tokensift.errors import InvalidArgumentError
from tokensift.hw.cost.latency import LatencyBudget
from tokensift.hw.cost.layer import HwConfig
from tokensift.sw import create_model, placement
from tokensift.sw.budget import FlopsBudget
from tokensift.sw.data import random_affine
from tokensift.sw.flops import count_flops
from tokensift.sw.methods import get_method, list_methods
from tokensift.sw.train import evaluate

MODEL = "vit_mnist_patch4_28"
SMALL = dict(embed_dim=32, depth=4, num_heads=2, prune_locs=(1, 2, 3))
HW = HwConfig(lanes=4, heads_parallel=2, linear_lanes=32, selector_lanes=4)


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two CUDA devices as far as the device choice can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_is_chosen_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.resolve_device("auto") == torch.device("cpu")
    assert placement.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidArgumentError, match="accelerator 'cuda' was asked for, but this PyTorch build "
                                                   "sees no CUDA GPU"):
        placement.resolve_device("cuda")


@pytest.mark.parametrize("local_rank, expected", [(None, 0), ("0", 0), ("1", 1)])
def test_each_process_takes_the_gpu_of_its_local_rank(fake_gpus, monkeypatch, local_rank, expected):
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    for accelerator in ("auto", "cuda"):
        assert placement.resolve_device(accelerator) == torch.device("cuda", expected)
    assert placement.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("local_rank, message", [
    ("2", "LOCAL_RANK 2 has no GPU of its own: this machine has 2 (start at most 2 processes per node)"),
    ("-1", "LOCAL_RANK must be a non-negative integer, not '-1'"),
    ("x", "LOCAL_RANK must be a non-negative integer, not 'x'"),
])
def test_a_local_rank_without_a_gpu_is_one_clear_error(fake_gpus, monkeypatch, local_rank, message):
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    with pytest.raises(InvalidArgumentError) as err:
        placement.resolve_device("auto")
    assert str(err.value) == message


def test_unknown_accelerator_is_rejected():
    with pytest.raises(InvalidArgumentError, match="accelerator must be one of auto, cuda, cpu, not 'tpu'"):
        placement.resolve_device("tpu")


def test_gpus_join_with_nccl_and_cpus_with_gloo(monkeypatch):
    calls = []
    monkeypatch.setattr(placement.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(placement.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", dev)))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not placement.init_distributed(torch.device("cuda", 1)) and not calls
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert placement.init_distributed(torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]
    calls.clear()
    assert placement.init_distributed(torch.device("cpu"))
    assert calls == [("init", "gloo")]
    assert placement.backend_for(torch.device("cuda", 0)) == "nccl"


def test_module_device_follows_parameters_then_buffers():
    assert placement.module_device(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
    bn = torch.nn.BatchNorm1d(2, affine=False).to("meta")
    assert placement.module_device(bn) == torch.device("meta")
    assert placement.module_device(torch.nn.ReLU()) == torch.device("cpu")


# -- the virtual device ---------------------------------------------------------------------------------------

def test_virtual_device_reports_host_tensors_meeting_device_tensors():
    x = torch.randn(4)  # made before the mode: on the device
    with VirtualDevice() as vd:
        table = torch.arange(10.0)  # a host table (the LatencyBudget bug this checker exists for)
        _ = table[x.long().clamp(0, 9)]
        _ = x + torch.ones(4)
        _ = x * torch.tensor(2.0)  # a 0-dim CPU tensor mixes with CUDA ones: allowed
        _ = x + torch.ones(4, device=x.device)  # made on the model's device
        _ = x + table[:4].to(x.device)
        _ = x + table[:4].to(x)
    assert len(vd.violations) == 2
    assert vd.violations[0].startswith("__getitem__: tests/sw/test_sw_placement.py:")
    assert vd.violations[1].startswith("add: tests/sw/test_sw_placement.py:")


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("latency", [False, True], ids=["flops-budget", "latency-budget"])
@pytest.mark.parametrize("method", [m for m in list_methods() if m != "none"])
def test_a_training_step_keeps_everything_on_the_models_device(method, latency):
    torch.manual_seed(0)
    data = _data()
    images, labels = data.tensors[0][:16], data.tensors[1][:16]
    spec = get_method(method)
    model = create_model(MODEL, method=method, keep_ratio=0.7, **SMALL).train()
    teacher = create_model(MODEL, **SMALL).eval()
    with VirtualDevice() as vd:
        criterion = spec.build_criterion(model.keep_ratio, len(model.selectors))
        if latency:
            plan = LatencyPlan(device="pynq-z2", hw=HW, target_ms=0.9 * LatencyBudget(
                create_model(MODEL, **SMALL), HW, "pynq-z2").dense, calib_images=32)
            criterion = plan.prepare(model, criterion, data)
        augmented = random_affine(images, generator=torch.Generator().manual_seed(1))
        loss, parts = criterion(model, teacher if spec.uses_teacher else None, augmented, labels)
        loss.backward()
        evaluate(model, data, batch_size=16)
        count_flops(model, images)
        if latency:
            plan.report(model, data, images=32)
        measure_latency(model, FlopsBudget(model), images)
    assert vd.violations == []
    assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in parts.values())


def test_modules_hold_no_unregistered_tensors():
    """A tensor attribute that is neither a parameter nor a buffer stays behind when the model moves."""
    for method in list_methods():
        model = create_model(MODEL, method=method, keep_ratio=None if method == "none" else 0.7, **SMALL)
        criterion = get_method(method).build_criterion(getattr(model, "keep_ratio", 1.0), len(model.selectors))
        for root in (model, criterion):
            for name, module in root.named_modules():
                loose = [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
                assert not loose, f"{method}: {type(module).__name__} {name!r} keeps tensors {loose}"


# -- the meta device: a real second device, for code without data-dependent control flow ----------------------

def test_budgets_and_augmentation_run_on_another_device():
    meta = torch.device("meta")
    model = create_model(MODEL, method="dynamicvit", keep_ratio=0.7)
    counts = torch.tensor([[40.0, 30.0, 20.0]] * 3, device=meta, requires_grad=True)
    for budget in (FlopsBudget(model), LatencyBudget(model, HW, "pynq-z2")):
        cost = budget(counts)
        assert cost.device == meta and cost.shape == (3,)
        cost.sum().backward()
    out = random_affine(torch.randn(2, 1, 28, 28, device=meta), generator=torch.Generator().manual_seed(0))
    assert out.device == meta


def test_dense_training_step_runs_on_another_device():
    meta = torch.device("meta")
    model = create_model(MODEL).to(meta).train()
    criterion = get_method("none").build_criterion(1.0, 0).to(meta)
    images, labels = torch.randn(4, 1, 28, 28, device=meta), torch.zeros(4, dtype=torch.long, device=meta)
    loss, _ = criterion(model, None, random_affine(images), labels)
    loss.backward()
    assert loss.device == meta and model.head.weight.grad.device == meta


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_fit_keeps_everything_on_the_models_device(amp):
    from tokensift.sw.train import TrainConfig, fit

    torch.manual_seed(0)
    data = _data(64)
    model = create_model(MODEL, method="dynamicvit", keep_ratio=0.7, **SMALL)
    teacher = create_model(MODEL, **SMALL)
    cfg = TrainConfig(epochs=1, batch_size=16, max_steps=3, amp=amp)
    with VirtualDevice() as vd:
        res = fit(model, get_method("dynamicvit").build_criterion(0.7, 3), data, cfg, test_set=data,
                  teacher=teacher, progress=False)
    assert vd.violations == []
    assert res.steps == 3 and 0 <= res.accuracy <= 1 and all(map(math.isfinite, [res.history[0]["loss"]]))


def test_train_config_rejects_bad_workers():
    from tokensift.sw.train import TrainConfig

    with pytest.raises(ValueError, match="workers must be a non-negative integer, not -1"):
        TrainConfig(workers=-1)
