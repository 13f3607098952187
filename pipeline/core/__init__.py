"""The shared base, the bottom floor: configuration (params.yaml composed from conf/, its schemas and bounds),
atomic output writing, one-line errors, progress bars, and reading the pipeline's own CSVs back.

Imports nothing else from pipeline.
"""
