"""how-many-params: exact parameter counts, ties and weight/bias shares of transformer models.

Stage modules (one per DVC stage, same name): download, count, ties, bias, report.
Library modules: params (configuration), inventory (per-tensor table), formulas (closed forms),
tying, splits, figures, atomic (output writing), cli (error handling).
Nothing here imports torch at import time; only the count stage pays for it.
"""
