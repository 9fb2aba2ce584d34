"""Figures of the 2-d case (matplotlib, Agg): posterior samples in data space over exact ones."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def data_space_samples(samples: np.ndarray, exact: np.ndarray, means: np.ndarray, title: str = "") -> Figure:
    """f(z) of the sampler's z (red) over exact posterior samples (grey), with the grid means marked."""
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(exact[:, 0], exact[:, 1], s=2, c="0.7", linewidths=0, label="exact posterior")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="red", linewidths=0, alpha=0.6, label="sampler")
    ax.scatter(means[:, 0], means[:, 1], marker="x", c="black", s=30)
    lim = 1.2 * float(np.abs(means).max()) + 2.0
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(fontsize="small", loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    return fig
