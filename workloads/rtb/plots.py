"""Figures of a posterior sampler on the 2-D toy (matplotlib Agg figures, no pyplot state).

'samples': posterior samples over the contours of the exact posterior N9 (the true prior's), as the reference plots
them; 'mode_masses': the 25 mode masses of the samples beside those of the fitted prior's exact posterior and N9's.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workloads.rtb.toy import Toy2D
from workloads.samplers.plots import samples_over_contours

PLOT_LIMIT = 13.0
"""Half-width of the plotted square (the reference's bounds (-13, 13))."""


def mode_mass_bars(masses: dict[str, np.ndarray], means: np.ndarray, title: str = "") -> Figure:
    """Grouped bars of mode masses {label: [K]}, one group per mode, labelled by its mean."""
    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    K, width = means.shape[0], 0.8 / len(masses)
    for n, (label, m) in enumerate(masses.items()):
        ax.bar(np.arange(K) + (n - (len(masses) - 1) / 2) * width, m, width=width, label=label)
    ax.set_xticks(np.arange(K), [f"({a:g},{b:g})" for a, b in means], rotation=90, fontsize="small")
    ax.set_ylabel("mode mass")
    ax.legend(fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def evaluation_figures(task: Toy2D, samples: np.ndarray, masses: dict[str, np.ndarray], title: str) -> dict:
    """{'samples': scatter over N9's contours, 'mode_masses': bars}."""
    return {
        "samples": samples_over_contours(task.target, samples, title, lim=PLOT_LIMIT),
        "mode_masses": mode_mass_bars(masses, task.means.cpu().numpy(), title),
    }
