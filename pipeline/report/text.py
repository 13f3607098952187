"""Text helpers every section shares: short counts (124.4M), exact counts, Markdown tables, shares, sizes."""

from __future__ import annotations

import pandas as pd


def human(n: float) -> str:
    """124439808 -> 124.4M, 1557611200 -> 1.56B."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(int(n))


def whole(n) -> str:
    return f"{int(n):,}"


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub Markdown table (pandas' to_markdown, through tabulate) of cells already formatted as text."""
    align = align or "l" + "r" * (len(header) - 1)
    assert len(align) == len(header) and all(len(r) == len(header) for r in rows), "ragged table"
    frame = pd.DataFrame([[str(c) for c in row] for row in rows], columns=header)
    return frame.to_markdown(
        index=False,
        tablefmt="pipe",
        colalign=["right" if a == "r" else "left" for a in align],
        disable_numparse=True,  # cells keep their own formatting (thousands separators, units)
    )


def percent(part: float, total: float) -> str:
    """A percentage with the digits a small part needs: 45.5 %, 0.63 %, 0.031 % (never a misleading 0.0 %)."""
    pct = 100 * part / total if total else 0.0
    if pct == 0 or pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %"


def nbytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def cell(v) -> str:
    return "—" if pd.isna(v) else whole(v)


def fetched(s: pd.Series) -> str:
    """How many bytes of the checkpoint were fetched for this model, in words."""
    if pd.isna(s.get("checkpoint_bytes")):
        return ""
    total = int(s["checkpoint_bytes"])
    if pd.isna(s.get("bytes_fetched")):
        return f" The weights ({nbytes(total)}) were read from local files; nothing was fetched."
    got = int(s["bytes_fetched"])
    how = "by HTTP range reads (headers and embedding matrices only)" if s.get("fetch") == "range" else "whole files"
    share = f"{100 * got / total:.2f} %"
    return f" Bytes fetched from the Hub, {how}: {nbytes(got)} ({got:,}) of {nbytes(total)} of weights ({share})."
