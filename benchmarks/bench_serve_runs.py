"""The run explorer's latency on a run folder of 100,000 rows (issue 26: first page and each filter ≤ 1 s, the
maps read lazily).

A synthetic run folder is written with the run store's own writer (:func:`xaikit.run.synthetic.write_synthetic_run`:
the manifest, Parquet rows and zarr shards of ``xaikit run``; two methods, two metrics, maps of one channel);
then, in a fresh :class:`xaikit.run.RunBrowser` (no model is built), the first page (reading only the shards it
shows), a fresh browser's first filter (reading every rows file) and each filter and sort, each followed by
reading the page's 24 maps as the web view does, are timed with interleaved repeats (median wall and CPU
seconds; the cold queries once per fresh browser, repeated on fresh browsers).

The same queries are then timed through the web app's route (``POST /api/runs/page``), a fresh app per repeat.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_serve_runs.py [--rows 100000] [--shard-size 1024]
[--side 16] [--repeats 5] [--folder /tmp/run100k] [--no-http] [--out benchmarks/results/serve_runs.md]``
(the web part needs ``xaikit[serve]``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from xaikit.run import RunBrowser
from xaikit.run.synthetic import write_synthetic_run

GOAL_S = 1.0
QUERIES = {
    "first page (index order)": ({}, "index", False),
    "filter: label = 3": ({"label": 3}, "index", False),
    "filter: wrong predictions": ({"correct": False}, "index", False),
    "filter: failed": ({"failed": True}, "index", False),
    "filter: metric range 0.2–0.4": ({"ranges": {"pixel_flipping/lrp": (0.2, 0.4)}}, "index", False),
    "sort: pixel_flipping/lrp descending": ({}, "pixel_flipping/lrp", True),
    "filter + sort: label 7, wrong, by sparseness/gradient": ({"label": 7, "correct": False}, "sparseness/gradient",
                                                               False),
    "page 2,000 of a sort (offset 47,976)": ({}, "score", False, 47_976),
}


def timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def query(browser: RunBrowser, filters, sort, descending, offset=0) -> None:
    page = browser.page(filters, sort, descending, offset, 24)
    if browser.map_methods:
        browser.maps("lrp", page.indices)


def http_query(url: str, filters, sort, descending, offset=0) -> None:
    """The same query through the web app's route (JSON in, rows and pooled maps out)."""
    import urllib.request

    body = json.dumps({"filters": filters, "sort": sort, "descending": descending, "offset": offset, "limit": 24,
                       "method": "lrp"}).encode()
    request = urllib.request.Request(f"{url}/api/runs/page", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        page = json.load(answer)
    assert len(page["maps"]) == (len(page["rows"]) if page["method"] else 0)


def jsonable(filters: dict) -> dict:
    return {k: ({c: list(r) for c, r in v.items()} if k == "ranges" else v) for k, v in filters.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/serve_runs.md")
    parser.add_argument("--folder", help="write the run folder here and reuse it when it is already there")
    parser.add_argument("--no-http", action="store_true", help="skip the timings through the web app")
    parser.add_argument("--no-maps", action="store_true", help="a run folder of rows only (save_maps=False)")
    parser.add_argument("--append", action="store_true", help="add the tables to --out instead of replacing it")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="xaikit-bench-runs-"))
    began = time.perf_counter()
    reused = (folder / "manifest.json").is_file()
    if not reused:
        write_synthetic_run(folder, args.rows, shard_size=args.shard_size, sample_shape=(1, args.side, args.side),
                            failure_rate=0.01, seed=0, save_maps=not args.no_maps)
    written = time.perf_counter() - began
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in QUERIES}
    cold: list[tuple[float, float]] = []
    cold_filter: list[tuple[float, float]] = []
    for _ in range(args.repeats):  # interleaved: a fresh browser, its first page, then every query once
        fresh = RunBrowser(folder)  # a fresh browser whose first query is a filter: it needs every row
        cold_filter.append(timed(lambda: query(fresh, {"label": 3}, "index", False)))
        browser = RunBrowser(folder)  # (its background read of the rest is waited for by the next query)
        cold.append(timed(lambda: query(browser, {}, "index", False)))
        for name, (filters, sort, descending, *offset) in QUERIES.items():
            times[name].append(timed(lambda: query(browser, filters, sort, descending, *offset)))
    web: dict[str, list[tuple[float, float]]] = {name: [] for name in QUERIES}
    web_cold: list[tuple[float, float]] = []
    web_cold_filter: list[tuple[float, float]] = []
    if not args.no_http:
        from xaikit.serve import ServeConfig, start

        for _ in range(args.repeats):  # a fresh app each repeat: its first page reads every rows file
            running = start(ServeConfig(run=folder, port=0))
            try:
                web_cold_filter.append(timed(lambda: http_query(running.url, {"label": 3}, "index", False)))
            finally:
                running.stop()
            running = start(ServeConfig(run=folder, port=0))
            try:
                web_cold.append(timed(lambda: http_query(running.url, {}, "index", False)))
                for name, (filters, sort, descending, *offset) in QUERIES.items():
                    web[name].append(timed(lambda: http_query(running.url, jsonable(filters), sort, descending,
                                                              *offset)))
            finally:
                running.stop()
    load = os.getloadavg()
    maps = ("no maps (save_maps=False)" if args.no_maps
            else f"maps (1, {args.side}, {args.side}) float32 in zarr v3 shards")
    title = (f"## {args.rows:,} rows in shards of {args.shard_size:,}, {'no maps' if args.no_maps else 'with maps'}"
             if args.append else "# Run explorer latency (`xaikit.run.RunBrowser`, the web app's runs view)")
    lines = [title, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on the shared 2-core development machine "
             f"under load (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} from the other helpers' work): "
             "wall times are several times an idle machine's; CPU seconds (`time.process_time`) are given beside them.",
             "", f"Run folder: {args.rows:,} rows written with the run store's own writer "
             f"(`xaikit.run.synthetic.write_synthetic_run`), {-(-args.rows // args.shard_size)} shards of "
             f"{args.shard_size:,}, two methods × two metrics, {maps}; {size / 2**20:.0f} MiB on disk"
             f"{' (written by an earlier call)' if reused else f', written in {written:.0f} s'}. Each query = the page "
             "of 24 rows plus reading those 24 samples' `lrp` maps (as the view does; none without maps). Median of "
             f"{args.repeats} interleaved repeats; goal ≤ {GOAL_S:.0f} s.", "",
             "| query | wall s (median) | CPU s (median) | within the goal |", "|---|---:|---:|---|"]

    def row(name: str, values: list[tuple[float, float]]) -> str:
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        return f"| {name} | {wall:.3f} | {cpu:.3f} | {'yes' if wall <= GOAL_S else 'no'} |"

    lines.append(row("cold: a fresh browser's first page (reads only the shards of the page)", cold))
    lines.append(row("cold: a fresh browser's first query a filter (label = 3; reads every rows file)", cold_filter))
    lines += [row(name, values) for name, values in times.items()]
    if web_cold:
        lines += ["", "Through the web app (`POST /api/runs/page` of a server started with `xaikit.serve.start` on "
                  "127.0.0.1, answered as JSON with the page's maps pooled for the gallery; the CPU column counts "
                  "the benchmark's process, which also runs the server's threads):", "",
                  "| query | wall s (median) | CPU s (median) | within the goal |", "|---|---:|---:|---|",
                  row("cold: a fresh app's first page", web_cold),
                  row("cold: a fresh app's first query a filter (label = 3)", web_cold_filter),
                  *[row(n, v) for n, v in web.items()]]
    lines += ["", "Reproduce: `PYTHONPATH=src nice -n 10 python benchmarks/bench_serve_runs.py` "
              f"(`--rows {args.rows} --shard-size {args.shard_size} --side {args.side} --repeats {args.repeats}"
              f"{' --no-maps' if args.no_maps else ''}`)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.append and Path(args.out).is_file():
        text = Path(args.out).read_text(encoding="utf-8") + "\n" + text
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
