"""The co-optimization report: ``report.md`` with two PNG plots (matplotlib, no display needed).

* ``pareto.png`` -- latency vs the accuracy objective: a sample of every design that fits, the Pareto
  front coloured by utilization, the latency-accuracy frontier, the target and the chosen point (and, when
  given, accuracy measured at front points);
* ``utilization.png`` -- the chosen design's resources per block (attention unit, linear array, token
  selector) as a share of the device's capacity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokensift.coopt.pareto import front_2d

__all__ = ["write_report", "plot_pareto", "plot_utilization"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(result, path: Path, measured: list[tuple[float, float]] | None = None, max_points: int = 20000,
                seed: int = 0) -> Path:
    """Write the latency-vs-accuracy plot of a :class:`~tokensift.coopt.search.CoOptResult`."""
    plt = _pyplot()
    s = result.summary
    lat, acc, fits = result.latency_ms, result.accuracy, result.fits
    fig, ax = plt.subplots(figsize=(7.5, 5))
    idx = np.flatnonzero(fits)
    if len(idx) > max_points:
        idx = np.random.default_rng(seed).choice(idx, max_points, replace=False)
    ax.scatter(lat[idx], acc[idx], s=3, c="0.82", label=f"designs that fit ({int(fits.sum())})", rasterized=True)
    front = result.front
    if front:
        fl = np.array([p["latency_ms"] for p in front])
        fa = np.array([p["accuracy_proxy"] for p in front])
        fu = np.array([p["max_utilization"] for p in front])
        sc = ax.scatter(fl, fa, s=14, c=100 * fu, cmap="viridis", label=f"Pareto front ({s['pareto_size']})")
        fig.colorbar(sc, ax=ax, label="busiest resource (% of device)")
    fit_idx = np.flatnonzero(fits)
    if len(fit_idx):
        m = front_2d(lat[fit_idx], -acc[fit_idx])
        pts = sorted(zip(lat[fit_idx][m].tolist(), acc[fit_idx][m].tolist(), strict=True))
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="tab:blue", lw=1,
                label="latency-accuracy frontier")
    if measured:
        ml, ma = zip(*sorted(measured), strict=True)
        ax.plot(ml, ma, "o-", color="tab:red", ms=4, lw=1, label="measured accuracy (frontier designs)")
    ax.axvline(s["target"]["latency_ms"], color="tab:orange", ls="--", label=f"target {s['target']['latency_ms']:g} ms")
    c = s["chosen"] or s["closest"]
    if c is not None:
        ax.scatter([c["latency_ms"]], [c["accuracy_proxy"]], marker="*", s=220, c="tab:red", edgecolors="k",
                   zorder=5, label="chosen" if s["chosen"] else "closest")
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter(""))
    ax.set_xlabel("latency per image (ms, log scale)")
    ax.set_ylabel(result.extra.get("accuracy_name", "accuracy proxy").replace("_", " "))
    ax.set_title(f"{s['model']} / {s['method']} on {s['device']['name']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_utilization(point: dict, capacity: dict, path: Path, title: str) -> Path:
    """Stacked bars: each block's share of each device resource."""
    plt = _pyplot()
    keys = [k for k in point["utilization"] if capacity.get(k)]
    units = point["units"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bottom = np.zeros(len(keys))
    for name, res in units.items():
        share = np.array([100 * float(res.get(k, 0)) / capacity[k] if capacity.get(k) else 0.0 for k in keys])
        ax.bar(keys, share, bottom=bottom, label=name)
        bottom += share
    ax.axhline(100, color="k", lw=0.8)
    ax.set_ylabel("% of device")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt_point(p: dict) -> list[str]:
    hw = p["hw"]
    rows = [
        f"| attention | {hw['lanes']} lanes x {hw['heads_parallel']} cores, {hw['softmax']} |",
        f"| linear engine | {hw['linear_lanes']} MACs ({hw['linear_rows']} x {hw['linear_lanes'] // hw['linear_rows']}), "
        f"weights {hw['weight_rate']} bytes per cycle |",
        f"| token selector | {hw['selector_lanes']} lanes |",
        f"| clock | {hw['clock_mhz']:g} MHz ({p['clock']['note']}) |",
        f"| keep ({p['keep']['kind']}) | {p['keep']['point']} |",
        f"| tokens per layer | {p['keep']['tokens']} |",
        f"| cycles | {p['cycles']:,} (attention {p['cycles_by_unit']['attention']:,}, linear "
        f"{p['cycles_by_unit']['linear']:,}, selector {p['cycles_by_unit']['selector']:,}) |",
        f"| latency | {p['latency_ms']:.4g} ms ({p['fps']:.4g} fps) |",
        f"| GFLOPs (MACs) | {p['gflops']:.4g} (retained backbone share {p['retained_flops']:.3f}) |",
    ]
    for k, u in p["utilization"].items():
        rows.append(f"| {k} | {p['resources'][k]} ({100 * u:.1f}%) |")
    return rows


def write_report(result, out_dir, *, measured: list[tuple[float, float]] | None = None,
                 extra_sections: list[str] | None = None) -> Path:
    """Write ``report.md``, ``pareto.png`` and ``utilization.png`` into ``out_dir``; return the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = result.summary
    plot_pareto(result, out / "pareto.png", measured=measured)
    point = s["chosen"] or s["closest"]
    if point is not None:
        plot_utilization(point, result.evaluator.capacity, out / "utilization.png",
                         f"{'chosen' if s['chosen'] else 'closest'} design on {s['device']['name']}")
    lines = [
        f"# Co-optimization: {s['model']} / {s['method']} on {s['device']['name']}",
        "",
        f"Target: {s['target']['latency_ms']:g} ms per image ({s['target']['fps']:.4g} fps). {s['message']}.",
        "",
        f"Search: {s['search']['kind']}, {s['search']['points']:,} design points in {s['search']['seconds']:.2f} s"
        + (f" ({s['search']['points_per_s']:,.0f} points/s)" if s["search"].get("points_per_s") else "")
        + f"; Pareto front: {s['pareto_size']} points. Objectives: "
        + ", ".join(f"{k} ({v})" for k, v in s["objectives"].items()) + f"; constraint: {s['constraint']}.",
        "",
        f"Resource model: {point['resource_model'] if point else 'n/a'}"
        + (" (DSP and block RAM only: a unit's LUT/FF fit is missing in this checkout)"
           if point and point["resource_model"] == "hard-blocks-only" else ""),
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    if point is not None:
        lines += [f"## {'Chosen' if s['chosen'] else 'Closest'} design", "", "| | |", "|---|---|", *_fmt_point(point), "",
                  "![Utilization per block](utilization.png)", ""]
    if s.get("training_budget"):
        tb = s["training_budget"]
        lines += ["## Training budget", "",
                  f"Dense latency on this hardware {tb['dense_latency_ms']:.4g} ms; planned {tb['planned_latency_ms']:.4g} "
                  f"ms (ratio {tb['latency_ratio']:.3f}).", "", "```sh", tb["command"], "```", ""]
    lines += ["## Pareto front (evenly thinned along latency)", "",
              "| latency (ms) | accuracy objective | busiest resource | lanes x cores | linear | selector | keep |",
              "|---|---|---|---|---|---|---|"]
    for p in s["pareto"][:60]:
        hw = p["hw"]
        lines.append(f"| {p['latency_ms']:.4g} | {p['accuracy_proxy']:.4f} | {100 * p['max_utilization']:.1f}% | "
                     f"{hw['lanes']} x {hw['heads_parallel']} | {hw['linear_rows']} x {hw['linear_lanes'] // hw['linear_rows']} | {hw['selector_lanes']} | "
                     f"{p['keep']['point']} |")
    if extra_sections:
        lines += ["", *extra_sections]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
