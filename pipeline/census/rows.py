"""The census's rows: their columns, and the CSV they are written as (the same bytes for the same rows)."""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = [
    "source",  # as listed
    "revision",  # the commit read (a branch resolved through the Hub API); '' for a local folder
    "total",  # unique parameters of the class built, every one accounted for in the headers
    "active",  # parameters one token uses (MoE: k of E routed experts); the total for a dense model
    "error",  # why the source was not counted, in one line; empty when it was
    "flags",  # ;-joined: refused_at_list|fetch|count with unavailable|invalid; index_|hub_absurd|implausible_claim
    "model_type",
    "model_class",  # the transformers class built on the meta device
    "architecture",  # hash of the config's content: repositories sharing it share one build
    "format",  # safetensors | gguf | config only
    "quant_method",
    "bits_per_param",  # checkpoint bytes × 8 / total
    "n_experts",
    "experts_per_token",
    "checkpoint_bytes",  # the weight files' sizes, from the server's Content-Range (no byte of data read)
    # named as results/summary.csv names them (pipeline.model.count.Weighed)
    "checkpoint_tensors",  # what a naive sum of the header's shapes gives (packed words, buffers and copies included)
    "checkpoint_buffers",  # values of tensors stored that are not parameters (GPT-2's causal masks)
    "tied_copies",  # values of a tied head stored a second time
    "checkpoint_extra",  # values of stored blocks the class does not build (MTP layers)
    "index_total",  # model.safetensors.index.json's metadata.total_parameters, as written
    "index_vs_exact",  # index_total minus total
    "index_explained",  # the difference in words
    "hub_total",  # the Hub API's figure: the list's hub_total, else safetensors.total when the API was asked
    "hub_vs_exact",
    "hub_explained",
    "bytes_fetched",  # body bytes received for this source (config, index, headers)
    "requests",  # HTTP requests (or local reads) made for it
]
INTEGERS = {"total", "active", "n_experts", "experts_per_token", "checkpoint_bytes", "checkpoint_tensors"}
INTEGERS |= {"checkpoint_buffers", "tied_copies", "checkpoint_extra", "index_vs_exact", "hub_vs_exact"}
INTEGERS |= {"bytes_fetched", "requests"}


def complete(row: dict[str, Any]) -> dict[str, Any]:
    return {column: row.get(column) for column in COLUMNS} | {"error": row.get("error") or ""}


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The census as CSV text: integers as integers, empty for none, the same bytes for the same rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            ["" if row[c] is None else (str(int(row[c])) if c in INTEGERS else cell(row[c])) for c in COLUMNS]
        )
    return buf.getvalue()


# A text cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV Injection"): such a cell
# is written after a single quote, which spreadsheets show as text and never evaluate.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value
