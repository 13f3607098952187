"""The model, built on the meta device: which class, the per-tensor inventory with roles and components,
mixtures of experts, the counting conventions, closed forms, ties, the weight/bias split, the reconciliation
of a checkpoint with the architecture, and the what-if grid.

May import pipeline.core and pipeline.formats.
"""
