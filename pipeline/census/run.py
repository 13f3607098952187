"""A census on Dask distributed: every listed source fetched, counted and written as a row, resumably.

Each source is two Dask tasks. The first reads its headers (I/O: as many in flight as the workers have
threads). The second counts them on the worker that owns its architecture (the config's hash picks
one worker of the cluster), so each distinct architecture is built once. A task never raises for a bad
repository: it returns the row with its reason, so one repository never stops the census.

Rows are journalled as they finish, in batches, each batch one file written atomically under
OUT.partial/. A killed census, run again with the same output, keeps every journalled row and counts
the rest; the CSV is written at the end, atomically and in the order of the list, so a restarted census
ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.census import journal, rows
from pipeline.census.journal import Journal, check_output, identity_of
from pipeline.census.listing import Source
from pipeline.core import atomic
from pipeline.core.errors import PipelineError, first_line

log = logging.getLogger("census")

# The Dask worker resource a count takes: one count at a time per worker (counting is CPU work under the GIL),
# so a worker's other threads stay free for fetches. A cluster's workers declare it with `--resources counter=1`;
# without it a worker still counts one at a time (a lock), but a waiting count then holds a thread.
COUNTER = "counter"
MAX_REASON = 400  # characters of a row's error (a crafted name could make it any length)


# --- the tasks (run on the workers) -----------------------------------------------------------


def fetch_task(src: Source, kept: tuple[dict[str, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Read one source's headers: {'row': what is known so far, 'fetched', 'route'} or a finished row. kept: a
    journalled (row, identity) of this source, taken as the finished row when what is read now is what it counted."""
    from pipeline.census import count, fetch

    row = {"source": src.source, "revision": src.revision, "hub_total": src.hub_total}
    try:
        fetched = fetch.fetch(src)
    except Exception as exc:  # noqa: BLE001 - a repository never stops the census: its reason is its row
        where = "list" if src.kind == "bad" else "fetch"
        reason = _reason(exc)
        kind = exc.kind if isinstance(exc, PipelineError) else "invalid"  # by the error's kind, never its words
        return {"row": {**row, "error": reason, "flags": f"refused_at_{where};{kind}"}}
    identity = identity_of(fetched)
    if kept is not None and kept[1] == identity:
        return {"row": kept[0], "identity": identity, "reused": True}
    row |= {"revision": fetched.revision, "bytes_fetched": fetched.bytes_fetched, "requests": fetched.requests}
    blob = fetched.config or b"".join(prefix for prefix, _ in fetched.prefixes.values())
    return {"row": row, "fetched": fetched, "route": count.architecture_key(blob, fetched.fmt), "identity": identity}


def count_task(job: dict[str, Any]) -> dict[str, Any]:
    """Count fetched headers against their architecture (built here once, kept for the next repository)."""
    import warnings

    from pipeline.census import count

    warnings.simplefilter("ignore", FutureWarning)  # transformers' notes on configs: not the census's answer
    identity = job.get("identity")
    try:
        counted = count.count(job["fetched"])
    except Exception as exc:  # noqa: BLE001 - as above
        row = {**job["row"], "error": _reason(exc), "flags": "refused_at_count;invalid"}
        return {"row": row, "identity": identity}
    return {"row": {**job["row"], **counted}, "identity": identity}  # its claims (hub_total included) are the count's


def route_of(job: dict[str, Any]) -> dict[str, Any]:
    """What the client needs of a fetch (runs where its headers are): the owner's key, or the finished row."""
    if "fetched" in job:
        return {"route": job["route"]}
    return {k: job[k] for k in ("row", "identity", "reused") if k in job}


def builds_here() -> int:
    """Architectures this worker built (the census reports the sum; a test checks it)."""
    from pipeline.census import count

    return count.builds


def _reason(exc: BaseException) -> str:
    from pipeline.census import count
    from pipeline.census.fetch import short

    text = count.reason(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {first_line(exc)}"
    text = " ".join(short(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


# --- the client -------------------------------------------------------------------------------


@dataclass
class Done:
    rows: list[dict[str, Any]]
    counted: int
    refused: int
    resumed: int
    builds: int
    workers: int  # 0: counted in this process, no cluster (a short list)
    seconds: float


SCHEDULER = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+:\d{1,5}")
CONNECT_SECONDS = 30


@contextlib.contextmanager
def client(scheduler: str | None, workers: int, threads: int) -> Iterator[Any]:
    """A Dask client: of the scheduler at ADDRESS, or of a local cluster of worker processes."""

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its start and stop notes are not the answer
    if scheduler:
        yield from _remote(scheduler)
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",  # this machine only
        dashboard_address="127.0.0.1:0",  # its status page on a free port, never a fixed one two runs would share
        silence_logs=logging.ERROR,
        resources={COUNTER: 1},
        # no memory manager: a census task holds headers of kilobytes, and pausing or restarting a worker when the
        # machine is short of memory (other processes' pages counted against it) would leave its tasks waiting
        memory_limit=0,
    )
    with cluster, Client(cluster) as c:
        yield c


def _remote(scheduler: str) -> Iterator[Any]:
    """A client of the scheduler at ADDRESS, connected within CONNECT_SECONDS (a port that accepts and says
    nothing, or speaks another protocol, would otherwise keep the census waiting for ever), else one line."""
    import threading

    from distributed import Client

    if not SCHEDULER.fullmatch(scheduler):
        raise PipelineError(f"--scheduler {scheduler}: not a Dask scheduler address (tcp://HOST:PORT)")
    got: dict[str, Any] = {}

    def connect() -> None:
        try:
            got["client"] = Client(scheduler, timeout=f"{CONNECT_SECONDS}s")
        except Exception as exc:  # noqa: BLE001 - whatever the other end made the client raise
            got["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS + 5)
    if "client" not in got:
        why = first_line(got["error"]) if "error" in got else f"no Dask answer within {CONNECT_SECONDS} s"
        raise PipelineError(f"--scheduler {scheduler}: cannot connect ({why})")
    with got["client"] as c:
        yield c


def census(
    sources: list[Source],
    out: Path,
    workers: int = 2,
    threads: int = 16,
    scheduler: str | None = None,
    every: int = 50,
    bar: Any = None,
) -> Done:
    """Count every source (resuming from OUT's journal) and write OUT.csv in the list's order."""
    start = time.monotonic()
    check_output(out)
    _hub_answers(sources)
    book = Journal(out, every)  # the journal of this output
    kept = book.load({s.key for s in sources})
    # a journalled row is taken only for the same source as it was: a commit read again as it was, anything else
    # read again (headers only) and taken when what it counted is byte for byte what is there now
    done = {s.key: kept[s.key][0] for s in sources if s.key in kept and journal.immutable(s, kept[s.key][1])}
    check = {s.key: kept[s.key] for s in sources if s.key in kept and s.key not in done}
    todo = [s for s in sources if s.key not in done]
    builds = n_workers = 0
    resumed = len(done)
    if todo:
        in_process = scheduler is None and len(todo) <= IN_PROCESS
        with contextlib.nullcontext() if in_process else client(scheduler, workers, threads) as c:
            flow = _Flow(c, todo, book, done, bar, check)
            n_workers = 0 if in_process else len(flow.owners)
            try:
                flow.run()
            finally:
                book.flush()  # what finished is kept, also when the census is interrupted
            builds = builds_here() if in_process else _builds(c)
        resumed += flow.reused
    done_rows = [rows.complete(done[s.key]) for s in sources]
    atomic.write_text(out, rows.to_csv(done_rows))
    book.remove()
    refused = sum(1 for r in done_rows if r["error"])
    return Done(done_rows, len(done_rows) - refused, refused, resumed, builds, n_workers, time.monotonic() - start)


IN_PROCESS = 8  # a list this short is counted in this process: a cluster's start and its workers' imports cost more


ASK_SECONDS = 30  # the most the census waits for its workers to say how many architectures they built


def _builds(c: Any) -> int:
    """Architectures the workers built, asked of them all at once, within ASK_SECONDS (a worker that does not
    answer, busy or gone, must not keep a finished census waiting): -1 when they do not all answer."""
    import threading

    got: dict[str, int] = {}

    def ask() -> None:
        got["builds"] = sum(c.run(builds_here).values())

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(ASK_SECONDS)
    if "builds" not in got:
        log.warning("census: the workers did not say within %d s how many architectures they built", ASK_SECONDS)
        return -1
    return got["builds"]


def _hub_answers(sources: list[Source]) -> None:
    """A list of Hub ids with a Hub that does not answer at all is one line at once, not a retried wait per row."""
    from huggingface_hub import constants

    from pipeline.sources.hub import hub_unreachable

    if constants.is_offline_mode() or not any(s.kind == "hub" for s in sources):
        return
    if reason := hub_unreachable():
        raise PipelineError(
            f"the Hub at {constants.ENDPOINT} cannot be reached ({reason}); set HF_HUB_OFFLINE=1 to take the "
            "repositories from the local cache, or HF_ENDPOINT to a mirror"
        )


class _Flow:
    """The sources through the cluster: a window of fetches in flight, each fetched one counted by its owner. With
    no client (c None: a short list), each source is fetched and counted in this process, one after another."""

    def __init__(self, c: Any, todo: list[Source], journal: Journal, done: dict, bar: Any, check: dict | None = None):
        self.c, self.pending, self.journal, self.done, self.bar = c, iter(todo), journal, done, bar
        self.check = check or {}  # source key -> a journalled (row, identity) to take if the source is unchanged
        self.reused = 0
        self.of: dict[str, tuple[Source, Any]] = {}  # a future's key -> its source (and the fetch it follows)
        if c is None:
            self.owners = ["this process"]
            return
        from distributed import as_completed

        info = c.scheduler_info()["workers"]
        # by name: a worker its nanny restarts keeps its name (its address changes)
        self.owners = sorted((w["name"] for w in info.values()), key=lambda n: (len(str(n)), str(n)))
        if not self.owners:
            raise PipelineError("the Dask cluster has no workers")
        limited = all(w.get("resources", {}).get(COUNTER) for w in info.values())
        self.needs = {"resources": {COUNTER: 1}} if limited else {}
        self.window = max(4, sum(w["nthreads"] for w in info.values()) * 2)
        self.flow = as_completed()

    def submit_fetch(self) -> None:
        """The next source's fetch, and the small task that tells the client where it goes: the headers stay
        on the workers (the count task takes them from the fetching worker, or where they already are)."""
        src = next(self.pending, None)
        if src is not None:
            token = _token(src)
            kept = self.check.get(src.key)
            fetched = self.c.submit(fetch_task, src, kept, key=f"fetch-{token}", pure=False, retries=1)
            routed = self.c.submit(route_of, fetched, key=f"route-{token}", retries=1)
            self.of[routed.key] = (src, fetched)
            self.flow.add(routed)

    def finish(self, src: Source, result: dict[str, Any]) -> None:
        self.journal.add(src.key, result["row"], result.get("identity"))
        self.done[src.key] = result["row"]
        self.reused += bool(result.get("reused"))
        if self.bar is not None:
            self.bar.update(1)

    def run(self) -> None:
        if self.c is None:
            for src in self.pending:
                result = fetch_task(src, self.check.get(src.key))
                self.finish(src, count_task(result) if "fetched" in result else result)
            return
        for _ in range(self.window):
            self.submit_fetch()
        for fut in self.flow:
            src, fetched = self.of.pop(fut.key)
            try:
                result = fut.result()
            except Exception:  # noqa: BLE001 - the workers running it died (KilledWorker), retries included
                stage = "count" if fut.key.startswith("count-") else "fetch"
                result = {"row": {**_first(src), "error": LOST, "flags": f"refused_at_{stage};worker_lost"}}
            fut.release()
            if "route" in result:  # counted next, by the worker that owns its architecture
                owner = self.owners[int(result["route"], 16) % len(self.owners)]
                key = f"count-{_token(src)}"
                job = self.c.submit(count_task, fetched, key=key, workers=[owner], retries=1, **self.needs)
                fetched.release()
                self.of[job.key] = (src, None)
                self.flow.add(job)
                continue
            if fetched is not None:
                fetched.release()
            self.finish(src, result)
            self.submit_fetch()


def _token(src: Source) -> str:
    return hashlib.sha256(f"{src.key}\t{os.getpid()}\t{time.monotonic_ns()}".encode()).hexdigest()[:20]


LOST = "the worker processes it ran on died each time it was tried (too big, or it crashes the libraries)"


def _first(src: Source) -> dict[str, Any]:
    return {"source": src.source, "revision": src.revision, "hub_total": src.hub_total}
