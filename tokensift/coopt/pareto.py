"""Non-dominated (Pareto) sets of points with objectives to minimize.

``q`` dominates ``p`` when ``q <= p`` in every objective and ``q < p`` in at least one; identical points
do not dominate each other, so duplicates stay on the front together.

* :func:`pareto_mask` -- any number of objectives, ``O(n * front)`` comparisons in numpy blocks;
* :func:`grid_front` -- the co-optimizer's grid (latency per hardware x keep point, utilization per
  hardware point, accuracy per keep point) without materialising the comparisons: keep points are taken
  in order of decreasing accuracy, each group's (utilization, latency) front is filtered against the
  staircase of everything more accurate, so millions of points take well under a second.

>>> import numpy as np
>>> pareto_mask(np.array([[1, 2], [2, 1], [2, 2], [1, 2]])).tolist()
[True, True, False, True]
"""

from __future__ import annotations

import numpy as np

__all__ = ["pareto_mask", "front_2d", "grid_front"]


def pareto_mask(objectives) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``objectives`` (n, m), all minimized."""
    obj = np.asarray(objectives, dtype=np.float64)
    if obj.ndim != 2:
        raise ValueError(f"objectives must be a 2-D array (points x objectives), not shape {obj.shape}")
    n = obj.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort(obj.T[::-1])  # lexicographic: a dominating point always comes first
    sorted_obj = obj[order]
    keep = np.ones(n, dtype=bool)
    front: list[int] = []
    for i in range(n):
        p = sorted_obj[i]
        if front:
            f = sorted_obj[front]
            le = np.all(f <= p, axis=1)
            lt = np.any(f < p, axis=1)
            if np.any(le & lt):
                keep[i] = False
                continue
        front.append(i)
    mask = np.zeros(n, dtype=bool)
    mask[order[keep]] = True
    return mask


def front_2d(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated points of two minimized objectives (ties kept)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n = len(u)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((v, u))
    us, vs = u[order], v[order]
    starts = np.r_[0, np.flatnonzero(us[1:] != us[:-1]) + 1]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    prefmin = np.minimum.accumulate(vs)
    before = np.where(starts > 0, prefmin[starts - 1], np.inf)[group]  # best v among strictly smaller u
    group_best = vs[starts][group]                                      # best v at the same u
    dominated = (before <= vs) | (group_best < vs)
    mask = np.zeros(n, dtype=bool)
    mask[order[~dominated]] = True
    return mask


class _Staircase:
    """Points (u, v) seen so far, answering "is there one with u' <= u and v' <= v"."""

    def __init__(self):
        self.u = np.zeros(0)
        self.v = np.zeros(0)

    def covers(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if len(self.u) == 0:
            return np.zeros(len(u), dtype=bool)
        idx = np.searchsorted(self.u, u, side="right") - 1
        best = np.where(idx >= 0, self.v[np.maximum(idx, 0)], np.inf)
        return best <= v

    def add(self, u: np.ndarray, v: np.ndarray) -> None:
        uu, vv = np.r_[self.u, u], np.r_[self.v, v]
        order = np.lexsort((vv, uu))
        uu, vv = uu[order], vv[order]
        pm = np.minimum.accumulate(vv)
        keep = np.r_[True, pm[1:] < pm[:-1]]
        self.u, self.v = uu[keep], pm[keep]


def grid_front(latency: np.ndarray, utilization: np.ndarray, accuracy: np.ndarray,
               valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pareto front of the grid: minimize latency ``(H, K)`` and utilization ``(H,)``, maximize accuracy
    ``(K,)``; only hardware points with ``valid`` (default all) take part. Returns (h, k) index arrays,
    ordered by decreasing accuracy."""
    lat = np.asarray(latency, dtype=np.float64)
    util = np.asarray(utilization, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    H, K = lat.shape
    if util.shape != (H,) or acc.shape != (K,):
        raise ValueError(f"shapes do not fit: latency {lat.shape}, utilization {util.shape}, accuracy {acc.shape}")
    hs = np.arange(H) if valid is None else np.flatnonzero(np.asarray(valid, dtype=bool))
    out_h, out_k = [], []
    if len(hs) == 0 or K == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u_valid = util[hs]
    stairs = _Staircase()
    order = np.argsort(-acc, kind="stable")
    acc_sorted = acc[order]
    starts = np.r_[0, np.flatnonzero(acc_sorted[1:] != acc_sorted[:-1]) + 1, K]
    for g in range(len(starts) - 1):
        ks = order[starts[g]:starts[g + 1]]
        u = np.tile(u_valid, len(ks))
        v = lat[np.ix_(hs, ks)].T.reshape(-1)
        mine = front_2d(u, v)
        mine &= ~stairs.covers(u, v)
        idx = np.flatnonzero(mine)
        if len(idx):
            out_h.append(hs[idx % len(hs)])
            out_k.append(ks[idx // len(hs)])
            stairs.add(u[idx], v[idx])
    if not out_h:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_h), np.concatenate(out_k)
