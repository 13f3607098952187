"""`hmp census LIST -o OUT.csv`: the exact count of every repository a list names, on Dask, resumable.

LIST is a text file (a Hub id, `owner/name@REVISION` or a local folder per line) or a CSV with the columns
`source`, `revision` and `hub_total`. Only config.json, the safetensors index and the headers are read
(pipeline/census/). The CSV has one row per listed source, in the list's order; a source that cannot
be counted is a row whose `error` says why. Killed and run again with the same -o, it goes on where it
stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.errors import PipelineError

log = logging.getLogger("census")


def census_command(list_path: str, out: str, workers: int, threads: int, scheduler: str | None) -> str:
    """Run the census; the summary line hmp prints."""
    from pipeline.census import journal, listing, run
    from pipeline.core import progress

    if workers < 1 or threads < 1:
        raise PipelineError("--workers and --threads must be at least 1")
    target = Path(out)
    if not out.strip():
        raise PipelineError("-o: names no file; name the CSV file to write")
    if target.is_dir() and not target.is_symlink():
        raise PipelineError(f"-o {out}: is a folder; name the CSV file to write")
    journal.check_output(target)
    if target.exists() and Path(list_path).exists() and target.resolve() == Path(list_path).resolve():
        raise PipelineError(f"-o {out}: is the list itself; name another file to write")
    sources = listing.read(list_path)
    if not sources:
        raise PipelineError(f"census list {list_path}: names no source")
    try:
        with progress.bar(None, "census", "repos", total=len(sources)) as bar:
            ticker = progress.Ticker(bar, "census", "sources", len(sources))
            done = run.census(sources, target, workers, threads, scheduler, bar=ticker)
    except KeyboardInterrupt:
        raise PipelineError(
            f"census interrupted; the rows that finished are kept in {target}{journal.SUFFIX}/: "
            "run the same command again to go on"
        ) from None
    fetched = sum(r["bytes_fetched"] or 0 for r in done.rows)
    resumed = f", {done.resumed:,} kept from the interrupted run" if done.resumed else ""
    where = f"on {done.workers} workers" if done.workers else "in this process (a short list: no cluster)"
    return (
        f"census: {len(done.rows):,} sources, {done.counted:,} counted, {done.refused:,} refused{resumed}; "
        f"{f'{done.builds:,}' if done.builds >= 0 else 'an unknown number of'} architectures built {where} in "
        f"{done.seconds:.1f} s; "
        f"{fetched:,} bytes fetched; wrote {out}"
    )
