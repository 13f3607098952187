"""What every figure shares: seaborn's theme, saving a PNG atomically (bytes depending only on the data), axes
and legends laid out the same way, and the components' labels.
"""

from __future__ import annotations

import io
from pathlib import Path

from pipeline.core import atomic

COMPONENT_LABELS = {
    "token_embedding": "token embedding",
    "position_embedding": "position embedding",
    "segment_embedding": "segment embedding",
    "other_embedding": "other embedding tables",
    "input_projection": "input projection (patch, audio front end)",
    "attention": "attention",
    "cross_attention": "cross-attention",
    "state_space": "state-space mixer",
    "router": "router",
    "experts": "routed experts",
    "shared_experts": "shared experts",
    "mlp": "MLP",
    "convolution": "convolutions in blocks",
    "layer_norm": "layer norm",
    "pooler": "pooler",
    "projection": "projections outside the blocks",
    "output_head": "output head (own tensors)",
    "misc": "other learned tensors",
}


# The smallest text a figure writes: seaborn's notebook "small" (10 pt), about 10 px or more on the report's page
# at 800 px wide; "x-small" and below read as 6 to 8 px there.
SMALL = "small"


def keep_inside(fig, ax, texts: list) -> None:
    """Widen a linear x axis until every text (bar labels, annotations placed in points from a data point) ends
    inside the axes: a label must never run past the frame. Repeated, since a wider axis moves the texts too."""
    texts = [t for t in texts if t is not None and t.get_text()]
    for _ in range(4):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        left, right = ax.get_xlim()
        frame = ax.get_window_extent(renderer)
        over = max((t.get_window_extent(renderer).x1 - frame.x1 for t in texts), default=0.0)
        if over <= 0:
            return
        ax.set_xlim(left, right + (right - left) * (over + 6) / frame.width)


def text_width(fig, ax, text) -> float:
    """A text's width in the x axis's data units (linear axis). Measured with the canvas's renderer, never by
    drawing the figure: no layout engine moves the axes here, and a draw per label cost 0.4 s each (49 s of a
    200-model report)."""
    renderer = fig.canvas.get_renderer()
    left, right = ax.get_xlim()
    return text.get_window_extent(renderer).width * (right - left) / ax.get_window_extent(renderer).width


def plain_log_ticks(axis) -> None:
    """Ticks of a log axis at 1, 2 and 5 of each decade, as plain numbers (100, 200, 500, 1,000): more than the two
    powers of ten a short range would show."""
    import matplotlib.ticker as mticker

    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}"))
    axis.set_minor_locator(mticker.NullLocator())


def save(fig, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # No software/version metadata, so the bytes depend only on the data.
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def log_log(
    fig, ax, xlabel: str, ylabel: str, title: str, path: Path, dpi: int, legend: str = "upper left", plain_y=False
) -> None:
    """Both axes logarithmic, labelled, the legend in a corner, and the figure saved.

    plain_y labels the y axis with plain numbers (perplexities 10, 20, 30, not 2×10¹)."""
    import matplotlib.ticker as mticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    if plain_y:
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "2345" else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=SMALL, loc=legend)
    save(fig, path, dpi)


def legend_outside(
    fig, ax, xlabel: str, title: str, path: Path, dpi: int, ylabel: str = "", legend: str = "small"
) -> None:
    """Axis labels and title, the legend outside the axes on the right, and the figure saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    save(fig, path, dpi)
