"""Calibration: per-tensor activation ranges from a few batches, turned into symmetric scales.

Two observers of ``|x|``:

* :class:`MinMaxObserver` keeps the running ``max |x|`` (no clipping; one outlier sets the scale).
* :class:`PercentileObserver` keeps a bounded, seeded random sample of ``|x|`` and returns its
  ``percentile`` (e.g. 99.99): outliers are clipped (saturated at run time), the rest gets finer steps.

:func:`calibrate` runs a model on a few batches with forward hooks on chosen modules and returns one
scale per tensor site (each site observed by the call's observer, or by its own when its spec names one);
:func:`tokensift.quant.fake.quantize_model` and
:mod:`tokensift.quant.integer_model` build on it.

>>> obs = MinMaxObserver()
>>> obs.update(np.array([-3.0, 1.0])); obs.update(np.array([2.0]))
>>> obs.absmax, obs.scale(bits=8) == 3.0 / 127
(3.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from tokensift.checks import check_int
from tokensift.quant.qparams import symmetric_scale

__all__ = ["Observer", "MinMaxObserver", "PercentileObserver", "make_observer", "OBSERVERS", "calibrate"]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().to("cpu").double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("observed values must be finite, not NaN or infinity")
    return arr


class Observer:
    """Base class: ``update`` with tensors, then read ``absmax`` (the range to map onto the largest code)."""

    def update(self, x) -> None:
        raise NotImplementedError

    @property
    def absmax(self) -> float:
        raise NotImplementedError

    @property
    def count(self) -> int:
        return self._count

    def scale(self, bits: int = 8) -> float:
        """The symmetric per-tensor scale ``absmax / (2**(bits-1) - 1)`` (1.0 for an all-zero tensor)."""
        if self._count == 0:
            raise ValueError("the observer has seen no values; run calibration batches first")
        return float(symmetric_scale(self.absmax, bits))


class MinMaxObserver(Observer):
    """Running maximum of ``|x|`` over every value seen."""

    def __init__(self):
        self._absmax = 0.0
        self._count = 0

    def update(self, x) -> None:
        a = _to_numpy(x)
        if a.size:
            self._absmax = max(self._absmax, float(np.abs(a).max()))
            self._count += a.size

    @property
    def absmax(self) -> float:
        return self._absmax


class PercentileObserver(Observer):
    """The ``percentile`` of ``|x|`` over a seeded random sample of at most ``max_samples`` values.

    Every batch contributes a sample proportional to its size (reservoir sampling by batch); the result is
    deterministic for a given ``seed`` and sequence of batches.
    """

    def __init__(self, percentile: float = 99.99, max_samples: int = 1 << 20, seed: int = 0):
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
            raise TypeError(f"percentile must be a number, not {percentile!r}")
        if not 0.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], not {percentile}")
        check_int("max_samples", max_samples, low=1, numpy=False, show="repr")
        self.percentile = float(percentile)
        self.max_samples = max_samples
        self._rng = np.random.default_rng(seed)
        self._sample = np.zeros(0)
        self._count = 0
        self._max = 0.0

    def update(self, x) -> None:
        a = np.abs(_to_numpy(x)).ravel()
        if not a.size:
            return
        self._max = max(self._max, float(a.max()))
        total = self._count + a.size
        # keep each value with probability max_samples / total, so the pooled sample stays uniform
        keep_new = min(a.size, math.ceil(self.max_samples * a.size / total))
        keep_old = min(self._sample.size, self.max_samples - keep_new)
        new = a if keep_new == a.size else self._rng.choice(a, size=keep_new, replace=False)
        old = self._sample if keep_old == self._sample.size else self._rng.choice(
            self._sample, size=keep_old, replace=False)
        self._sample = np.concatenate([old, new])
        self._count = total

    @property
    def absmax(self) -> float:
        if not self._sample.size:
            return 0.0
        if self.percentile == 100.0:
            return self._max
        return float(np.percentile(self._sample, self.percentile))


OBSERVERS: dict[str, Callable[[], Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
}


def make_observer(observer: str | Callable[[], Observer]) -> Observer:
    """An observer from its name (``"minmax"``, ``"percentile"``) or a factory."""
    if isinstance(observer, str):
        try:
            return OBSERVERS[observer]()
        except KeyError:
            raise ValueError(f"observer must be one of {', '.join(sorted(OBSERVERS))}, not {observer!r}") from None
    if callable(observer):
        obs = observer()
        if not isinstance(obs, Observer):
            raise TypeError(f"an observer factory must return an Observer, not {type(obs).__name__}")
        return obs
    raise TypeError(f"observer must be a name or an Observer factory, not {observer!r}")


def _images(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _observing_hook(obs: Observer, which):
    def hook(mod, args, out):
        if which == "input":
            value = args[0]
        elif which == "output":
            value = out
        else:
            value = which(args, out)
        obs.update(value[0] if isinstance(value, tuple) else value)

    return hook


def calibrate(model, loader: Iterable, sites: dict[str, tuple[object, str]], *,
              observer: str | Callable[[], Observer] = "minmax", num_batches: int = 4,
              bits: int = 8) -> dict[str, float]:
    """Run ``model`` on ``num_batches`` batches and return one symmetric scale per site.

    Args:
        model: a torch module (run in eval mode under ``torch.no_grad``; its mode is restored).
        loader: iterable of image batches or ``(images, labels)`` pairs.
        sites: ``name -> (module, which)``, ``(module, which, observer)`` (this site's own observer, which
            wins over ``observer``) or a list of ``(module, which)`` pairs (one observer over all of them),
            with ``which`` ``"input"`` (the first positional argument), ``"output"`` (the output, or its
            first element for a tuple) or a callable ``(args, output) -> tensor`` (e.g. a slice of the output).
        observer: ``"minmax"``, ``"percentile"`` or an :class:`Observer` factory: every site's but those
            that name their own.
        num_batches: how many batches to run (at least 1).
        bits: activation width.

    Returns:
        ``name -> scale``. A site whose module never ran raises ValueError.
    """
    import torch

    check_int("num_batches", num_batches, low=1, numpy=False, show="repr")
    observers = {name: make_observer(spec[2] if isinstance(spec, tuple) and len(spec) == 3 else observer)
                 for name, spec in sites.items()}
    handles = []
    try:
        for name, spec in sites.items():
            for module, which in (spec if isinstance(spec, list) else [spec[:2]]):
                if not (which in ("input", "output") or callable(which)):
                    raise ValueError(f"site {name!r} must observe 'input', 'output' or a callable, not {which!r}")
                handles.append(module.register_forward_hook(_observing_hook(observers[name], which)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in loader:
                if seen >= num_batches:
                    break
                model(_images(batch))
                seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("the calibration loader yielded no batches")
    missing = [name for name, obs in observers.items() if obs.count == 0]
    if missing:
        raise ValueError(f"calibration never reached {', '.join(missing)}; check that these modules run")
    return {name: obs.scale(bits) for name, obs in observers.items()}
