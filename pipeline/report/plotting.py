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
    ax.legend(fontsize="x-small", loc=legend)
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
