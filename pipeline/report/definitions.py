"""Definitions: one line per column of results/summary.csv."""

from __future__ import annotations

from pipeline.model import inventory
from pipeline.report.base import Data, Section


def definitions_section() -> str:
    lines = ["## Definitions", "", "Columns of `results/summary.csv`:", ""]
    lines += [f"- `{key}`: {text}" for key, text in inventory.DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def section(d: Data) -> Section:
    return Section(definitions_section())
