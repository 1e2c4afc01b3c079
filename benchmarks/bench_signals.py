"""Cost of the virtual inspection layer (xaikit.signals) against the method's own cost, signals of 16k samples.

For the propagated methods (LRP, gradient × input, IG) the view adds one forward transform and one
vector–Jacobian product of the inverse (the z-rule through it) to the method's own pass. The issue's bound:
the view costs at most 1.2× the method. Timings interleave the two calls (method alone, method through the
view) over repeats and report the median of the per-repeat ratios.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_signals.py [--repeats 7] [--model small|m5]
[--out FILE.md]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

import xaikit as xk
from xaikit.signals import STFT, VirtualInspection


def audio_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 16, 65, stride=4), nn.ReLU(), nn.Conv1d(16, 32, 33, stride=4), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def m5_model() -> nn.Module:
    """M5 of Dai et al. 2017 ("Very deep convolutional neural networks for raw waveforms"), the usual baseline
    for 16 kHz speech commands: four convolutions (128-128-256-512 channels) with BatchNorm and max pooling."""
    torch.manual_seed(0)

    def block(i: int, o: int, k: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv1d(i, o, k, stride=stride), nn.BatchNorm1d(o), nn.ReLU(), nn.MaxPool1d(4)]

    return nn.Sequential(*block(1, 128, 80, 4), *block(128, 128, 3), *block(128, 256, 3), *block(256, 512, 3),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(512, 35)).eval()


MODELS = {"small": (audio_model, "a Conv1d audio model (2 strided convolutions, 10 classes)"),
          "m5": (m5_model, "M5 (Dai et al. 2017: 4 convolutions of 128-512 channels with BatchNorm, 35 classes)")}


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter


def seconds(call) -> float:
    began = clock()
    call()
    return clock() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: less noise on a shared machine)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (on a loaded machine: the time the work itself "
                             "took, without the waits for other jobs)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    model = MODELS[args.model][0]()
    x = torch.randn(args.batch, 1, 16000, generator=torch.Generator().manual_seed(0))
    rows, load_before = [], os.getloadavg()
    for spec in (f"lrp:composite=epsilon,batch_size={args.batch}", f"input_x_gradient:batch_size={args.batch}",
                 "integrated_gradients:steps=16,batch_size=32"):
        method = xk.resolve_method(model, spec)
        for name, transform in (("DFT", "dft"), ("STFT 512/128", STFT(512, 128))):
            view = VirtualInspection(model, transform, method=method)
            method(x, 0), view(x, 0)  # warm-up (and auto batch sizes)
            alone, viewed = [], []
            for _ in range(args.repeats):
                alone.append(seconds(lambda: method(x, 0)))
                viewed.append(seconds(lambda: view(x, 0)))
            ratios = [v / a for a, v in zip(alone, viewed)]
            rows.append((spec, name, statistics.median(alone), statistics.median(viewed), statistics.median(ratios),
                         max(ratios)))
            print(f"{spec:45s} {name:13s} alone {rows[-1][2] * 1e3:8.1f} ms  view {rows[-1][3] * 1e3:8.1f} ms  "
                  f"ratio {rows[-1][4]:.3f} (max {rows[-1][5]:.3f})", flush=True)
    load_after = os.getloadavg()
    lines = ["# Virtual inspection layer: cost against the method's own (signals of 16k samples)", "",
             f"Batch {args.batch} × 1 × 16000 (float32), {MODELS[args.model][1]}, "
             f"{args.repeats} interleaved repeats after a warm-up; the ratio is the median of the per-repeat ratios "
             f"(view ÷ method alone), timed by {'wall time' if args.clock == 'wall' else 'CPU time of the process'}"
             ". Bound of issue 23: ≤ 1.2×.", "",
             f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, shared with other jobs (loaded: timings are noisy, the "
             "interleaving keeps the ratio fair); load average (1, 5, 15 min) "
             f"{', '.join(f'{v:.1f}' for v in load_before)} at the start, "
             f"{', '.join(f'{v:.1f}' for v in load_after)} at the end, on {os.cpu_count()} cores.", "",
             f"Command: `PYTHONPATH=src nice -n 10 python benchmarks/bench_signals.py --repeats {args.repeats} "
             f"--clock {args.clock} --model {args.model} --out FILE.md` (fixed batch sizes, so that the chunk-size search of "
             "`batch_size=\"auto\"` does not enter the ratio)",
             "", "| method | view | alone (ms) | through the view (ms) | ratio (median) | ratio (max) |",
             "|---|---|---|---|---|---|"]
    for spec, name, a, v, r, m in rows:
        lines.append(f"| `{spec}` | {name} | {a * 1e3:.1f} | {v * 1e3:.1f} | {r:.3f} | {m:.3f} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
