"""Our exact count beside a repository's own claims (its index's total_parameters, the Hub API's figure), and
why they differ, in words.

A claim is explained when it equals the exact count plus or minus a combination of what a checkpoint
holds besides the parameters, or what a count may leave out:
- buffers stored as tensors (GPT-2's causal masks): the header counts them, the model has no such parameters;
- a tied head stored a second time; tensors of blocks the class does not build (DeepSeek's MTP layers) or
  of a head it does not have;
- packed storage: quantized words and their scales counted as if each were a parameter;
- the embeddings, or the untied head, left out; or only the active parameters of an MoE counted.
A claim that is not a finite number, or more than any model holds, or off by more than a factor of
IMPLAUSIBLE with no explanation, is flagged: self-reported totals are not trusted (huggingface_hub
#4221: 333,312 for a 7.6B model; huggingface.js #2322: headers claiming 1.8e308).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from pipeline.model.count import MAX_PARAMS

PACKED = "quantized storage: the header's words and scales, not the parameters they encode ({n:+,})"
IMPLAUSIBLE = 2.0  # an unexplained claim more than twice the exact count, or under half of it


def parts(row: dict[str, Any]) -> list[tuple[int, str]]:
    """(signed amount, words) of every known way a claim may differ from the exact count."""
    out = [
        (row.get("checkpoint_buffers") or 0, "buffers stored as tensors ({n:,})"),
        (row.get("tied_copies") or 0, "the tied head stored again ({n:,})"),
        (
            row.get("checkpoint_extra") or 0,
            "stored blocks the class does not build, such as MTP layers or extra heads ({n:,})",
        ),
        (row.get("unused") or 0, "a head the built class does not have ({n:,})"),
        (row.get("packing") or 0, PACKED),
        (-(row.get("embedding") or 0), "the embeddings ({n:,})"),
    ]
    if row.get("untied_head"):
        out.append((-row["untied_head"], "the untied head ({n:,})"))
    return [(n, words) for n, words in out if n]


def explain(claim: Any, row: dict[str, Any]) -> tuple[Any, str, str]:
    """(claim minus exact, the difference in words, a flag or '') for one claim beside the exact count."""
    if claim is None or row.get("total") is None:
        return None, "", ""
    total = row["total"]
    if isinstance(claim, float) and math.isfinite(claim) and claim > MAX_PARAMS:
        return None, f"claims {claim:.3g}, more than any model holds ({MAX_PARAMS:.0e})", "absurd_claim"
    if not isinstance(claim, int) or isinstance(claim, bool):
        shown = f"{claim:.3g}" if isinstance(claim, float) and math.isfinite(claim) else repr(claim)
        return None, f"claims {shown}, not a count of parameters", "absurd_claim"
    if claim > MAX_PARAMS:
        return claim - total, f"claims {claim:.3g}, more than any model holds ({MAX_PARAMS:.0e})", "absurd_claim"
    diff = claim - total
    if diff == 0:
        return 0, "agrees", ""
    if row.get("active") is not None and claim == row["active"] and row["active"] != total:
        return diff, "counts only the active parameters (experts per token)", ""
    known = parts(row)
    for k in range(1, len(known) + 1):
        for combo in combinations(known, k):
            if sum(n for n, _ in combo) == diff:
                more = ", ".join(w.format(n=abs(n)) for n, w in combo if n > 0 and w != PACKED)
                fewer = ", ".join(w.format(n=abs(n)) for n, w in combo if n < 0 and w != PACKED)
                packed = [w.format(n=n) for n, w in combo if w == PACKED]
                said = [f"counts {more}" if more else "", f"leaves out {fewer}" if fewer else ""]
                said += [f"counts {packed[0]}"] if packed else []
                return diff, "; ".join(w for w in said if w), ""
    ratio = claim / total if total else math.inf
    flag = "implausible_claim" if not 1 / IMPLAUSIBLE <= ratio <= IMPLAUSIBLE else ""
    return diff, f"unexplained: {diff:+,} ({ratio:.3g}× the exact count)", flag
