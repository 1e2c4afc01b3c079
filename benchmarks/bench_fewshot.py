"""Explanation-guided few-shot training (Sun et al., ICPR 2020) on the glyph few-shot set (xaikit.zoo.glyphs).

A prototypical network (Conv encoder, Snell et al. 2017) is trained episodically on the meta-train characters,
plain (λ = 0) and with the LRP re-weighting of the query embeddings (``ExplanationGuidedLoss("features", λ)``
on the episode, R from LRP ``epsilon_plus`` of the query's true-class prototype logit), from the same seed
(same initialisation, same training episodes). Both are tested on the same 600 5-way K-shot episodes of the
meta-test characters (15 queries per class), inductive (BatchNorm running statistics) and, with
``--transductive``, transductive (BatchNorm statistics of the test episode; one encoder call per episode).

Run (one process per shot; results appended as JSON lines, one per seed and variant)::

    for shot in 1 5; do for seed in 0 1 2; do
        PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_fewshot.py --shot $shot --seeds $seed \
            --episodes 300 --out /tmp/fs/s${shot}_${seed}.jsonl &
    done; done; wait; cat /tmp/fs/s*.jsonl > benchmarks/results/fewshot_runs.jsonl
    PYTHONPATH=src python benchmarks/bench_fewshot.py --report      # the tables of results/fewshot.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from xaikit.improve import ExplanationGuidedLoss
from xaikit.improve.fewshot import conv4, episode_accuracy, episode_loss, episodes_accuracy, mean_ci
from xaikit.zoo.glyphs import EpisodeSampler, make_glyphs

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "fewshot_runs.jsonl"


def train(data, shot: int, seed: int, lam: float, episodes: int, way: int, queries: int, channels: int,
          blocks: int, lr: float) -> tuple[torch.nn.Module, float, float]:
    """Episodic Adam training; the learning rate halves at 50 % and 75 % of the episodes. Returns the encoder,
    the process seconds and the mean training loss of the last 10 % of the episodes."""
    torch.manual_seed(seed)
    encoder = conv4(channels, blocks=blocks)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, [episodes // 2, 3 * episodes // 4], 0.5)
    sampler = EpisodeSampler(data, "train", way, shot, queries, seed=seed)
    loss_fn = ExplanationGuidedLoss("features", lam) if lam > 0 else None
    began, tail = time.process_time(), []
    encoder.train()
    for step in range(episodes):
        ep = sampler.sample()
        loss, _ = episode_loss(encoder, ep.support, ep.support_y, ep.query, ep.query_y, loss_fn)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step >= episodes - max(1, episodes // 10):
            tail.append(float(loss.detach()))
    encoder.eval()
    return encoder, time.process_time() - began, sum(tail) / len(tail)


@torch.no_grad()
def test(encoder, data, shot: int, count: int, transductive: bool, split: str = "test") -> dict:
    """Per-episode accuracies on ``count`` fixed 5-way episodes (the same for every model: seed 10 000 + shot).
    Inductive: every image of the split embedded once (eval mode), the episodes batched
    (:func:`episodes_accuracy`); transductive (optional, one encoder call per episode): BatchNorm statistics of
    the episode."""
    encoder.eval()
    z = torch.cat([encoder(chunk) for chunk in data.x.split(2000)])
    sampler = EpisodeSampler(data, split, 5, shot, 15, seed=10_000 + shot)
    rows = torch.stack([sampler.sample_rows()[1] for _ in range(count)])  # (E, 5, shot + 15)
    labels = torch.arange(5)[None, :, None]
    sy, qy = labels.expand(count, 5, shot).reshape(count, -1), labels.expand(count, 5, 15).reshape(count, -1)
    support_rows, query_rows = rows[:, :, :shot].reshape(count, -1), rows[:, :, shot:].reshape(count, -1)
    out = {"inductive": episodes_accuracy(z[support_rows], sy, z[query_rows], qy).tolist()}
    if transductive:
        x = data.x
        out["transductive"] = [episode_accuracy(encoder, x[s], y1, x[q], y2, transductive=True)
                               for s, y1, q, y2 in zip(support_rows, sy, query_rows, qy)]
    return out


def glyphs():
    """The glyph set (20 per class, 28×28, seed 0), cached in the system's temporary folder across processes."""
    import tempfile

    path = Path(tempfile.gettempdir()) / "xaikit_bench_fewshot_glyphs.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    data = make_glyphs(samples_per_class=20, size=28, seed=0)
    torch.save(data, str(path) + f".{os.getpid()}")
    os.replace(str(path) + f".{os.getpid()}", path)
    return data


def run(args) -> None:
    data = glyphs()
    for seed in args.seeds:
        for lam in (0.0, args.lam):
            encoder, seconds, tail = train(data, args.shot, seed, lam, args.episodes, args.train_way,
                                           args.queries, args.channels, args.blocks, args.lr)
            accs = test(encoder, data, args.shot, args.test_episodes, args.transductive)
            row = {"shot": args.shot, "seed": seed, "lam": lam, "episodes": args.episodes,
                   "train_way": args.train_way, "channels": args.channels, "blocks": args.blocks,
                   "train_cpu_s": seconds, "train_loss_tail": tail, **accs,
                   "load": os.getloadavg()[0]}
            with Path(args.out).open("a") as f:
                f.write(json.dumps(row) + "\n")
            m, h = mean_ci(accs["inductive"])
            print(f"shot {args.shot} seed {seed} λ {lam}: {100 * m:.2f} ± {100 * h:.2f} % "
                  f"({seconds:.0f} CPU s, load {row['load']:.1f})", flush=True)


def report(path: Path = RUNS) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    lams = sorted({r["lam"] for r in rows if r["lam"] > 0})
    out = []
    for mode in [m for m in ("inductive", "transductive") if all(m in r for r in rows)]:
        out += [f"### 5-way, {mode} (accuracy %, mean ± 95 % CI over the test episodes)", "",
                "| shot | seed | plain (λ = 0) | " + " | ".join(f"LRP-guided (λ = {lam})" for lam in lams)
                + " | paired difference (points, 95 % CI over episodes) |", "|---" * (4 + len(lams)) + "|"]
        for shot in sorted({r["shot"] for r in rows}):
            diffs = {lam: [] for lam in lams}
            for seed in sorted({r["seed"] for r in rows if r["shot"] == shot}):
                by = {r["lam"]: r for r in rows if r["shot"] == shot and r["seed"] == seed}
                if 0.0 not in by:
                    continue
                cells = []
                for lam in [0.0, *lams]:
                    cells.append("—" if lam not in by else "%.2f ± %.2f" % tuple(
                        100 * v for v in mean_ci(by[lam][mode])))
                dcells = []
                for lam in lams:
                    if lam in by:
                        d = [a - b for a, b in zip(by[lam][mode], by[0.0][mode])]
                        m, h = mean_ci(d)
                        diffs[lam].append(m)
                        dcells.append(f"{100 * m:+.2f} ± {100 * h:.2f}")
                out.append(f"| {shot} | {seed} | " + " | ".join(cells) + " | " + ", ".join(dcells) + " |")
            for lam in lams:
                d = torch.tensor(diffs[lam], dtype=torch.float64)
                if d.numel() >= 2:
                    se = float(d.std() / math.sqrt(d.numel()))
                    out.append(f"| {shot} | **mean over {d.numel()} seeds** | | | **{100 * float(d.mean()):+.2f} ± "
                               f"{100 * se:.2f} (se)** |")
        out.append("")
    cpu = {lam: [r["train_cpu_s"] / r["episodes"] for r in rows if r["lam"] == lam] for lam in [0.0, *lams]}
    out.append("Training CPU time per episode (s): " + ", ".join(
        f"λ = {lam}: {sum(v) / len(v):.3f}" for lam, v in cpu.items() if v) + "; load average at the end of the "
        f"runs {min(r['load'] for r in rows):.1f}–{max(r['load'] for r in rows):.1f}.")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--episodes", type=int, default=1500)
    parser.add_argument("--train-way", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--test-episodes", type=int, default=600)
    parser.add_argument("--transductive", action="store_true")
    parser.add_argument("--out", default=str(RUNS))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.report:
        print(report(args.out))
    else:
        RESULTS.mkdir(exist_ok=True)
        run(args)


if __name__ == "__main__":
    main()
