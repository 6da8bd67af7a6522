"""PNG plots for reports: confusion matrix, reliability diagram, macro-F1 against β.

matplotlib is an optional extra (`pip install 'taosr-toolkit[plots]'`) and is imported inside
each function, with the Agg backend (no display). `available()` says whether plots can be made;
stages skip their plots with a warning when it is False.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

INSTALL = "pip install 'taosr-toolkit[plots]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed, so no PNG plots are written; install it with: %s", INSTALL)
        return False
    return True


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=120, layout="constrained")


def confusion_png(matrix: list[list[int]], tick_labels: list[str], path: "str | Path",
                  title: str = "Confusion matrix") -> Path:
    """Row-normalised colours, raw counts written in each cell; rows gold, columns predicted."""
    import numpy as np

    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(tick_labels)
    fig = _figure(1.2 + 0.9 * k, 1.0 + 0.8 * k)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(k), tick_labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), tick_labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of gold row")
    fig.savefig(path)
    return Path(path)


def reliability_png(bins: list[dict], ece: float, path: "str | Path") -> Path:
    """Accuracy per confidence bin against the diagonal, with the bin counts below."""
    fig = _figure(5, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    conf = [b["confidence"] if b["confidence"] is not None else 0.0 for b in bins]
    filled = [i for i, b in enumerate(bins) if b["count"]]
    top.bar([centers[i] for i in filled], [acc[i] for i in filled], width=width * 0.9, color="#4c72b0",
            edgecolor="black", label="accuracy")
    top.scatter([centers[i] for i in filled], [conf[i] for i in filled], marker="_", s=max(60, 2400 * width),
                linewidths=2.5, color="#dd8452", zorder=3, label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (top label), ECE = {ece:.3f}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.9, color="gray")
    bottom.set_xlabel("confidence (largest grade probability)")
    bottom.set_ylabel("rows")
    fig.savefig(path)
    return Path(path)


def beta_curve_png(betas, f1, good_rate, beta: float, baselines: dict[str, float], path: "str | Path") -> Path:
    """Macro-F1 (and the Good rate) against β, the fitted β, and other rules' macro-F1 as lines."""
    fig = _figure(6.5, 4.6)
    ax = fig.add_subplot()
    ax.plot(betas, f1, color="#4c72b0", linewidth=1.8, label="CumPT macro-F1")
    ax.axvline(beta, color="#4c72b0", linestyle=":", linewidth=1.2, label=f"fitted β = {beta:.3f}")
    for (name, value), style in zip(baselines.items(), ("--", "-.", ":")):
        ax.axhline(value, color="gray", linestyle=style, linewidth=1, label=f"{name} macro-F1 = {value:.3f}")
    ax.set_xlabel("β")
    ax.set_ylabel("macro-F1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(1e-3, max(list(f1) + list(baselines.values()))) * 1.1)
    right = ax.twinx()
    right.plot(betas, good_rate, color="#55a868", linewidth=1, alpha=0.8, label="Good rate")
    right.set_ylabel("Good rate", color="#55a868")
    right.set_ylim(0, 1.05)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
              fontsize=8)
    ax.set_title("CumPT: macro-F1 against β (dev)", fontsize=10)
    fig.savefig(path)
    return Path(path)
