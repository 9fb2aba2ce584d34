"""Figures of sampler output (matplotlib, Agg; no pyplot state, so figures never leak between calls)."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workloads.samplers.targets.base import Target


def samples_over_contours(
    target: Target, samples: np.ndarray, title: str = "", lim: float | None = None, grid: int = 200
) -> Figure:
    """Scatter of samples [N, D] (first two coordinates) over the contours of log R (2-d targets)."""
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
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
        ax.contourf(X, Y, np.maximum(log_r, log_r.max() - 30.0), levels=40, cmap="viridis", alpha=0.8)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="white", edgecolors="black", linewidths=0.2, alpha=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    return fig
