"""Equal time from the tables of ``bench_interactions.py``, with a model's cost per coalition added to every method.

The table games (shapes superpixels, MiniLM tokens) read their values from a table, so the times the benchmark
prints are the estimators' own overhead. A real model adds ``budget × cost`` seconds per row to every method alike
(``cost``: seconds per coalition of the model, batched; measured in benchmarks/results/interactions.md). For every
shapiq point (approximator, budget) this prints the xaikit column's best error among its points that take no more
time per row, and the peer points no xaikit point is as fast as. SVARMIQ is left out (its times come from the
cache, an earlier and loaded run).

Run: python benchmarks/interactions_equal_time.py shapes.txt:0.0002 minilm.txt:0.00334 wine.txt cancer.txt
"""
from __future__ import annotations

import argparse
import re


def read_table(path: str) -> tuple[list[str], dict]:
    """The methods and ``{(method, budget): (error, seconds per row)}`` of the first table in a benchmark output."""
    lines = open(path).read().split("\n")
    head = next(line for line in lines if line.startswith("| budget | xaikit"))
    methods = [c.strip() for c in head.strip("|").split("|")][1:]
    table = {}
    for line in lines[lines.index(head) + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for method, cell in zip(methods, cells[1:]):
            found = re.match(r"([\d.]+) \(([\d.]+)\)", cell)
            if found:
                table[method, int(cells[0])] = (float(found[1]), float(found[2]))
    return methods, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", help="FILE or FILE:COST (seconds per coalition)")
    parser.add_argument("--ours", default="xaikit default")
    args = parser.parse_args()
    for spec in args.outputs:
        path, _, cost = spec.partition(":")
        cost = float(cost or 0.0)
        methods, table = read_table(path)
        timed = {key: (error, spent + key[1] * cost) for key, (error, spent) in table.items()}
        peers = [m for m in methods if not m.startswith("xaikit") and m != "SVARMIQ"]
        ours = [(error, spent) for (method, _), (error, spent) in timed.items() if method == args.ours]
        print(f"\n{path}: model cost {cost * 1e3:.2f} ms per coalition\n")
        print(f"| shapiq point | its error | s/row | {args.ours}: best error as fast | ratio |")
        print("|---|---|---|---|---|")
        for (method, budget), (error, spent) in sorted(timed.items(), key=lambda item: (item[0][0], item[0][1])):
            if method in peers:
                within = [e for e, s in ours if s <= spent]
                best = f"{min(within):.4f} | {min(within) / error:.2f}" if within else "none as fast | -"
                print(f"| {method} {budget} | {error:.4f} | {spent:.3f} | {best} |")


if __name__ == "__main__":
    main()
