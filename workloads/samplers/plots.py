"""Figures of sampler output (matplotlib, Agg; no pyplot state, so figures never leak between calls).

2-d targets: samples over the contours of log R. Higher-dimensional targets: histograms of a few
coordinates' marginals, sampler against exact samples (Funnel: x0 and x1; Manywell: the first well's
two coordinates, x1 and x2 in the paper's notation).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workloads.samplers.targets.base import Target

MARGINAL_COORDINATES: dict[str, dict[str, int]] = {
    "funnel": {"x0": 0, "x1": 1},
    "manywell": {"x1 (first well)": 0, "x2 (first well)": 1},  # states are (a_1, b_1, a_2, b_2, ...)
}
"""Coordinates whose marginals are drawn, by target name: label -> index. Other targets: x0 and x1."""
CONTOUR_DEPTH = 10.0
"""Contours of log R span [max log R - this, max log R]: each mode a disc of radius sqrt(2 * 10) std
(~2.4 for 25GMM's modes, ~5.9 for 40GMM's), so neighbouring modes stay apart."""


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def samples_over_contours(
    target: Target, samples: np.ndarray, title: str = "", lim: float | None = None, grid: int = 200
) -> Figure:
    """Scatter of samples [N, D] (first two coordinates) over the contours of log R (2-d targets)."""
    fig = _figure(5, 5)
    ax = fig.subplots()
    if lim is None:
        exact = target.sample(2000, seed=0).cpu().numpy()
        lim = 1.15 * float(np.abs(exact[:, :2]).max())
    if target.dim == 2:
        u = np.linspace(-lim, lim, grid, dtype=np.float32)
        X, Y = np.meshgrid(u, u)
        pts = torch.from_numpy(np.stack([X.ravel(), Y.ravel()], 1)).to(target.device)
        with torch.no_grad():
            log_r = target.log_reward(pts).cpu().numpy().reshape(grid, grid)
        ax.contourf(X, Y, np.maximum(log_r, log_r.max() - CONTOUR_DEPTH), levels=20, cmap="viridis", alpha=0.8)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="red", linewidths=0, alpha=0.7)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def marginal_histograms(
    samples: np.ndarray, exact: np.ndarray, coordinates: dict[str, int], title: str = "", bins: int = 60
) -> Figure:
    """Per coordinate, density histograms of the sampler's samples and exact samples [N, D] on shared bins.

    The bins span the exact samples' 0.5%-99.5% quantiles (widened by 10%): heavy tails (the Funnel's
    x1) would otherwise squeeze the bulk into a few bins. Samples outside are left out of both."""
    fig = _figure(4.5 * len(coordinates), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(coordinates)))
    for ax, (label, i) in zip(axes, coordinates.items()):
        lo, hi = np.quantile(exact[:, i], [0.005, 0.995])
        pad = 0.1 * (hi - lo)
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        ax.hist(exact[:, i], bins=edges, density=True, color="0.75", label="exact")
        ax.hist(samples[:, i], bins=edges, density=True, histtype="step", linewidth=1.5, color="C3", label="sampler")
        ax.set_xlabel(label)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def evaluation_figures(
    target_name: str, target: Target, samples: np.ndarray, exact: np.ndarray, title: str = ""
) -> dict[str, Figure]:
    """The figures of one evaluation by name: {'samples'} for 2-d targets, {'marginals'} otherwise."""
    if target.dim == 2:
        lim = 1.15 * float(np.abs(exact).max())
        return {"samples": samples_over_contours(target, samples, title, lim=lim)}
    coordinates = MARGINAL_COORDINATES.get(target_name, {"x0": 0, "x1": 1})
    return {"marginals": marginal_histograms(samples, exact, coordinates, title)}
