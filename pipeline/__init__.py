"""how-many-params: exact parameter counts, ties and weight/bias shares of transformer models.

The packages are floors; each may import its own and those below it (tests/test_architecture.py checks):

    cli/      hmp, a thin door: parses options, calls answers/ (or a running hmp serve), prints the answer
    serve/    hmp serve, a resident door: a JSON API and a web page over answers/, imports paid once
    stages/   one thin module per DVC stage, named as the stage: download, count, ties, bias, census, report
    answers/  one library call per question a door asks (count a source, plan its memory, add it to the
              sweep), each returning a typed answer
    report/   the report as sections (text and figure together), its renderer, plot data, offline plots page
    census/   many repositories counted from their headers alone, on Dask distributed, resumably (hmp census)
    sources/  where a model's files come from: its config, a local folder, the Hub (whole files or ranges)
    cost/     what the parameters cost: memory, the KV cache, compute
    values/   the values of a checkpoint, streamed: statistics, histograms, tie correlations
    model/    the class, built on the meta device; inventory, roles, components, MoE, conventions, closed
              forms, ties, splits, the reconciliation of a checkpoint with it, the what-if grid
    formats/  one door to a model folder's weights: safetensors, GGUF, range reads, quantized layouts
    core/     params.yaml (composed from conf/) and its schemas and bounds, atomic writes, errors, progress

Flow: conf/ -> params.yaml -> stages -> library -> results/ -> report -> reports/. Nothing here imports torch
at import time; only a stage or command that builds a model pays for it.

Why so many imports sit inside functions: torch, transformers' model code, pandas, matplotlib, dask and
huggingface_hub cost 1 to 10 s to import on 2 cores. `hmp --help`, `hmp --version`, an `hmp` refusal, and a
stage whose every model comes from its cache (tests/stages/test_sweep.py: count, ties, bias and report import
neither torch nor transformers then) must not pay for libraries they do not use. So a module imports at its
top only the standard library, pipeline modules that do the same, and what every caller of it needs anyway;
the rest is imported where it is used.
"""
