"""PNG figures of runs: mixture weights, alignment scores, losses."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from megatron_dga.files import atomic_open  # noqa: E402
from megatron_dga.monitoring.runs import Run, Series  # noqa: E402


def _steps_values(series):
    return [s for s, _ in series], [v for _, v in series]


def _panel_per_run(runs: Sequence[Run], prefix: str, path: str, title: str,
                   draw: Callable[[plt.Axes, Dict[str, Series]], None]) -> Optional[str]:
    """One panel per run that logged `<prefix>/*`, stacked, each drawn by `draw(ax, series)`."""
    runs = [r for r in runs if r.group(prefix)]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 3.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        draw(ax, run.group(prefix))
        ax.set_title(f"{run.name}: {title}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    axes[-1, 0].set_xlabel("iteration")
    return _save(fig, path)


def _draw_weights(ax, weights: Dict[str, Series]) -> None:
    names = sorted(weights)
    steps = _steps_values(weights[names[0]])[0]
    ax.stackplot(steps, [_steps_values(weights[n])[1] for n in names], labels=names)
    ax.set_ylim(0, 1)
    ax.set_xlim(min(steps), max(steps))
    ax.set_ylabel("weight")


def _draw_alignment(ax, alignment: Dict[str, Series]) -> None:
    for name, series in sorted(alignment.items()):
        ax.plot(*_steps_values(series), label=name, marker=".")
    ax.axhline(0.0, color="black", linewidth=0.5)


def plot_weights(runs: Sequence[Run], path: str) -> Optional[str]:
    """One stacked-area panel per run that logged `data-mixture/*`."""
    return _panel_per_run(runs, "data-mixture", path, "domain weights", _draw_weights)


def plot_alignment(runs: Sequence[Run], path: str) -> Optional[str]:
    """One panel per run that logged `alignment/*`, a line per domain."""
    return _panel_per_run(runs, "alignment", path, "alignment <grad L_i, grad L_spe>", _draw_alignment)


def plot_losses(runs: Sequence[Run], path: str, validation_sets: List[str]) -> Optional[str]:
    """Training loss, and each requested validation set, one panel each, runs overlaid."""
    panels = [("lm loss", "training loss")] + [(f"lm loss validation/{s}", f"validation loss: {s}")
                                               for s in validation_sets]
    panels = [(tag, title) for tag, title in panels if any(r.series.get(tag) for r in runs)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (tag, title) in zip(axes[0], panels):
        for run in runs:
            if run.series.get(tag):
                ax.plot(*_steps_values(run.series[tag]), label=run.name, marker="." if "validation" in tag else None)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
