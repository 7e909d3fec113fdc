"""The report's figure: the funnel of a run and its pass rates, one PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, never a window: runs on machines without a display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from .jsonl import atomic_text  # noqa: E402
from .report import IO_PRED_NAMES  # noqa: E402

UNIT_COLORS = {"samples": "#4C72B0", "predictions": "#DD8452"}
TURN_COLORS = {"turn_1": "#4C72B0", "turn_2": "#DD8452", "after_turn_2": "#55A868"}
TURN_LABELS = {"turn_1": "turn 1", "turn_2": "turn 2 (revised only)",
               "after_turn_2": "after turn 2 (all)"}


def _funnel(ax: plt.Axes, stages: list[dict], title: str, xlabel: str, color: str) -> None:
    """Horizontal bars, first stage on top, each labelled with its count (or "absent")."""
    names = [f["stage"] for f in stages]
    counts = [f["count"] or 0 for f in stages]
    ys = range(len(stages))
    ax.barh(ys, counts, color=color, height=0.7)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    top = max(counts) if any(counts) else 1
    ax.set_xlim(0, top * 1.18)  # room for the value labels right of the bars
    for y, f, c in zip(ys, stages, counts):
        absent = f["count"] is None
        ax.text(c + top * 0.01, y, "absent" if absent else f"{c:,}", va="center", ha="left",
                fontsize=9, color="dimgray" if absent else "black")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)


def _pass_rates(ax: plt.Axes, rates: dict) -> None:
    preds = list(rates["turn_1"])
    turns = list(TURN_LABELS)
    width = 0.8 / len(turns)
    for t_i, turn in enumerate(turns):
        xs = [p_i + (t_i - (len(turns) - 1) / 2) * width for p_i in range(len(preds))]
        vals = [100 * (rates[turn][p]["rate"] or 0) for p in preds]
        ax.bar(xs, vals, width * 0.95, color=TURN_COLORS[turn], label=TURN_LABELS[turn])
        for x, v, p in zip(xs, vals, preds):
            r = rates[turn][p]
            ax.text(x, v + 1.5, "n/a" if r["rate"] is None else f"{v:.0f}%",
                    ha="center", va="bottom", fontsize=9)
            # the counts go inside the bar, upright, so neighbouring labels never collide
            if r["rate"] is not None and v >= 22:
                ax.text(x, 2, f"{r['passed']:,}/{r['total']:,}", ha="center", va="bottom",
                        rotation=90, fontsize=7.5, color="white")
    ax.set_xticks(range(len(preds)),
                  [IO_PRED_NAMES.get(p, "all predictions" if p == "all" else p) for p in preds])
    ax.set_xlim(-0.6, len(preds) - 0.4)
    ax.set_ylim(0, 125)  # labels above a 100% bar stay inside the axes
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("passed (%); passed/total inside the bars")
    ax.set_title("Pass rate by turn and prediction type")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(turns), fontsize=8,
              frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def plot_report(report: dict, path: str, title: str = "Run report") -> str:
    """Draw the funnel (left: samples, then predictions, each on its own scale) and the
    pass rates (right) of `report` into the PNG `path`."""
    samples = [f for f in report["funnel"] if f["unit"] == "samples"]
    predictions = [f for f in report["funnel"] if f["unit"] != "samples"]
    fig = plt.figure(figsize=(14, 6.5))
    grid = fig.add_gridspec(2, 2, width_ratios=[1.1, 1],
                            height_ratios=[max(len(samples), 1) + 1.5, len(predictions) + 1.5])
    try:
        _funnel(fig.add_subplot(grid[0, 0]), samples, "Funnel 1: raw files to parsed samples",
                "samples (one per raw file)", UNIT_COLORS["samples"])
        _funnel(fig.add_subplot(grid[1, 0]), predictions,
                "Funnel 2: prediction prompts to final records",
                "predictions (one per prompt)", UNIT_COLORS["predictions"])
        _pass_rates(fig.add_subplot(grid[:, 1]), report["pass_rates"])
        fig.suptitle(title, fontsize=13, fontweight="bold")
        fig.tight_layout()
        with atomic_text(path) as fh:
            # the PNG is bytes: matplotlib writes them to the file's binary buffer
            fig.savefig(fh.buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
