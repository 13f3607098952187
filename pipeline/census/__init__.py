"""A census of many repositories: each counted exactly from its config.json and headers alone, on Dask distributed,
beside its own claims, resumable (`hmp census`, the census stage).

listing (the list file), fetch (range reads through huggingface_hub, the cache, or a folder), count (one
build per distinct architecture, headers reconciled with it), explain (claims in words), run (Dask tasks,
or one process for a short list), journal (rows kept as they finish, with what each counted), rows (the
columns and the CSV). May import pipeline.core, pipeline.formats, pipeline.model and pipeline.sources
(whether the Hub answers).
"""
