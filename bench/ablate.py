"""The paper in miniature: CLIP vs negations-as-hard-negatives vs SemCLIP on the synthetic world.

    python bench/ablate.py                                       # 5 variants x seeds 0 1 2, README's table
    python bench/ablate.py --variants clip semclip --seeds 0     # the two that matter, one seed
    python bench/ablate.py --steps 200 --batch-size 64           # unknown flags go to train.py as they are

Every (variant, seed) is one `python train.py --loss ... --seed S --out OUT/<variant>_s<S>` run,
exactly the command a reader would type, timed from the outside, then evaluated on the
synthetic test split (eval.evaluate_synth) into OUT/<variant>_s<S>/results.json. Same data,
steps, model and seeds for every variant, so the only difference is the loss. A run whose
results.json exists is skipped: rerun the same command to finish a killed ablation.

Writes OUT/ablation.json (every run, and mean/std per variant), OUT/ablation.md (the table for
the README) and --figure (default OUT/margins.svg): for CLIP and SemCLIP (first seed), the
histogram over test items of cos(image, caption) - cos(image, negation). Right of zero, the
model prefers the true caption; CLIP's mass sits on zero because it has learned that "no" and
"not" mean nothing.
"""

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import read_triplets  # noqa: E402
from errors import DataError, run_cli  # noqa: E402
from synth import DEFAULT_SYNTH_DIR, write_synth  # noqa: E402
from eval import (default_device, embed_images, embed_texts, evaluate_synth, load_model,  # noqa: E402
                  write_results)

# variant name: its train.py flags. The paper's comparison plus two SemCLIP knobs.
VARIANTS = {
    "clip": ["--loss", "clip"],                                 # contrastive only
    "negclip": ["--loss", "negclip"],                           # negations as extra hard negatives
    "semclip": ["--loss", "semclip"],                           # paper defaults: K=2, fixed basis
    "semclip_learnable": ["--loss", "semclip", "--learnable-projections"],
    "semclip_k1": ["--loss", "semclip", "--num-projections", "1"],
}
METRICS = ("orig_over_neg", "t2i_r1", "i2t_r1", "para_t2i_r1", "zeroshot_orig", "zeroshot_neg")
OWN_TRAIN_FLAGS = ("--loss", "--seed", "--out", "--data", "--resume", "--learnable-projections", "--num-projections")
FIGURE_VARIANTS = {"clip": "#d9542b", "semclip": "#2b6cd9"}  # variant: colour


def parse_args():
    parser = argparse.ArgumentParser(
        description="Train every loss variant with the same seed, data, steps and model on the synthetic "
                    "negation world, evaluate each on its test split, and print one table (mean +- std over seeds).",
        epilog="examples:\n"
               "  python bench/ablate.py --figure docs/margins.svg       # the README's Results: 5 variants x 3 seeds\n"
               "  python bench/ablate.py --variants clip semclip --seeds 0 --steps 200\n"
               "  python bench/ablate.py --out runs/bs64 --batch-size 64   # unknown flags are passed to train.py\n"
               "variants: " + ", ".join(f"{name} ({' '.join(flags)})" for name, flags in VARIANTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT",
                        help="some of: %(choices)s (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: %(default)s)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: train.py's)")
    parser.add_argument("--synth-dir", type=Path, default=DEFAULT_SYNTH_DIR,
                        help="synthetic world, written once if missing (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"), help="(default: %(default)s)")
    parser.add_argument("--figure", type=Path, help="margin histogram SVG (default: OUT/margins.svg)")
    parser.add_argument("--workers", type=int, default=2, help="train.py's DataLoader workers (default: %(default)s)")
    parser.add_argument("--device", default=default_device(), help="(default: %(default)s)")
    args, train_flags = parser.parse_known_args()
    clashes = [flag for flag in train_flags if flag.split("=")[0] in OWN_TRAIN_FLAGS]
    if clashes:
        parser.error(f"{clashes[0]}: the ablation sets this train.py flag itself")
    args.train_flags = train_flags
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds: each seed once")
    args.figure = args.figure or args.out / "margins.svg"
    return args


def train_command(args, variant, seed, run_dir):
    steps = [] if args.steps is None else ["--steps", str(args.steps)]
    return [sys.executable, os.path.relpath(ROOT / "train.py"), *VARIANTS[variant], "--seed", str(seed), *steps,
            "--synth-dir", str(args.synth_dir), "--workers", str(args.workers), "--device", args.device,
            "--out", str(run_dir), *args.train_flags]


def run_one(args, variant, seed, run_dir):
    """Train (a subprocess, log in RUN/train.log), evaluate, write RUN/results.json; returns its dict."""
    if run_dir.exists():
        print(f"  discarding the unfinished run in {run_dir}")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = train_command(args, variant, seed, run_dir)
    begin = time.time()
    with (run_dir / "train.log").open("w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    train_s = time.time() - begin
    if finished.returncode != 0:
        last = (run_dir / "train.log").read_text().strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"{variant} seed {seed}: train.py failed ({last[0]}); full log {run_dir / 'train.log'}")
    model, tokenizer = load_model(run_dir / "ckpt.pt", args.device)
    n, metrics = evaluate_synth(model, tokenizer, args.synth_dir, args.device)
    write_results(run_dir / "results.json", "synth", run_dir / "ckpt.pt", n, metrics, variant=variant, seed=seed,
                  train_s=train_s, command="python " + " ".join(command[1:]))
    return json.loads((run_dir / "results.json").read_text())


def summarize(results, variants):
    """{variant: {metric: (mean, std over seeds)}}; std is the sample std (0 with one seed)."""
    summary = {}
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        columns = {m: [r["metrics"][m] for r in runs] for m in METRICS} | {"train_s": [r["train_s"] for r in runs]}
        summary[variant] = {m: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                            for m, v in columns.items()}
    return summary


def cell(metric, mean, std):
    return f"{mean:.0f} ± {std:.0f}" if metric == "train_s" else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary) -> str:
    """One row per variant, "mean ± std" cells, padded so that it reads as well in a terminal as in the README
    (eval.format_table is for single numbers)."""
    rows = [["variant", *METRICS, "train_s"]]
    rows += [[variant, *(cell(m, *stats[m]) for m in rows[0][1:])] for variant, stats in summary.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths))) + " |"
             for row in rows]
    return "\n".join([lines[0], "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|",
                      *lines[1:]])


def paired_gains(results, variant, baseline="clip"):
    """Mean over shared seeds of (variant - baseline) per metric: the same seed, so the same init and batches."""
    by_seed = {(r["variant"], r["seed"]): r["metrics"] for r in results}
    seeds = [s for v, s in by_seed if v == variant and (baseline, s) in by_seed]
    return {m: statistics.mean(by_seed[variant, s][m] - by_seed[baseline, s][m] for s in seeds) for m in METRICS}


def caption_margins(args, run_dir):
    """cos(image, caption) - cos(image, negation) per test item, for one trained run."""
    records = read_triplets(args.synth_dir / "test.jsonl", ("paraphrase", "negation"))
    model, tokenizer = load_model(run_dir / "ckpt.pt", args.device)
    image = embed_images(model, records, args.device)
    caption = embed_texts(model, [r["caption"] for r in records], tokenizer, args.device)
    negation = embed_texts(model, [r["negation"] for r in records], tokenizer, args.device)
    return ((image * caption).sum(1) - (image * negation).sum(1)).tolist()


def histogram_svg(margins: dict, colours: dict, title: str, bins=40, width=640, height=320) -> str:
    """Overlaid histograms {label: values} as a small hand-written SVG: shared bins, a zero line,
    x ticks, the highest count, and a legend with each label's share right of zero."""
    values = [v for vs in margins.values() for v in vs]
    edge = math.ceil(max(0.1, *(abs(v) for v in values)) * 10) / 10  # symmetric about 0, a round number
    low, step = -edge, 2 * edge / bins
    counts = {label: [0] * bins for label in margins}
    for label, vs in margins.items():
        for v in vs:
            counts[label][min(bins - 1, int((v - low) / step))] += 1
    top = max(max(c) for c in counts.values())
    left, right, upper, lower = 50, 20, 40, 40
    x = lambda v: left + (v - low) / (2 * edge) * (width - left - right)  # noqa: E731
    y = lambda c: height - lower - c / top * (height - upper - lower)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for label, colour in colours.items():
        points = [f"{x(low):.1f},{y(0):.1f}"]
        for i, c in enumerate(counts[label]):
            points += [f"{x(low + i * step):.1f},{y(c):.1f}", f"{x(low + (i + 1) * step):.1f},{y(c):.1f}"]
        points.append(f"{x(-low):.1f},{y(0):.1f}")
        parts.append(f'<polygon points="{" ".join(points)}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>')
    parts.append(f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{y(top)}" stroke="black"/>')
    parts.append(f'<text x="{left - 4}" y="{y(top) + 4}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left + 4}" y="{upper - 8}">items per bin</text>')
    parts.append(f'<text x="{left - 4}" y="{y(0) + 4}" text-anchor="end">0</text>')
    parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(0)}" y2="{upper - 8}" stroke="black" stroke-dasharray="4 3"/>')
    for tick in (-edge, -edge / 2, 0, edge / 2, edge):
        parts.append(f'<text x="{x(tick):.1f}" y="{height - lower + 16}" text-anchor="middle">{tick:+.2f}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">'
                 f'cos(image, caption) − cos(image, negation): right of 0 = the true caption wins</text>')
    for row, (label, colour) in enumerate(colours.items()):
        share = sum(v > 0 for v in margins[label]) / len(margins[label])
        parts.append(f'<rect x="{left + 10}" y="{upper + 4 + 18 * row}" width="12" height="12" fill="{colour}" '
                     f'fill-opacity="0.6"/>')
        parts.append(f'<text x="{left + 28}" y="{upper + 14 + 18 * row}">{label}: {share:.0%} right of 0 '
                     f'(n={len(margins[label])})</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def main():
    args = parse_args()
    if not ((args.synth_dir / "train.jsonl").is_file() and (args.synth_dir / "test.jsonl").is_file()):
        print(f"writing the synthetic negation world to {args.synth_dir} (once)")
        write_synth(args.synth_dir)
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    results, begin, trained = [], time.time(), 0
    for k, (variant, seed) in enumerate(jobs, 1):
        run_dir = args.out / f"{variant}_s{seed}"
        command = " ".join(train_command(args, variant, seed, run_dir)[1:])
        if (run_dir / "results.json").is_file():
            done = json.loads((run_dir / "results.json").read_text())
            if done["command"] != f"python {command}":  # never mix runs of different settings in one table
                raise DataError(f"{run_dir} was trained by `{done['command']}`, not `python {command}`; "
                                "pick another --out or delete that folder")
            print(f"[{k}/{len(jobs)}] {variant} seed {seed}: done before, reading {run_dir / 'results.json'} "
                  "(delete it to rerun)")
            results.append(done)
            continue
        print(f"[{k}/{len(jobs)}] {variant} seed {seed}: python {command}", flush=True)
        results.append(run_one(args, variant, seed, run_dir))
        trained += 1
        elapsed = time.time() - begin
        metrics = results[-1]["metrics"]
        print(f"  orig_over_neg {metrics['orig_over_neg']:.3f} | t2i_r1 {metrics['t2i_r1']:.3f} | "
              f"train {results[-1]['train_s']:.0f}s | elapsed {elapsed / 60:.1f} min | "
              f"eta {elapsed / trained * (len(jobs) - k) / 60:.1f} min", flush=True)
    wall_s = time.time() - begin

    summary = summarize(results, args.variants)
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, device {args.device}, "
               f"torch {torch.__version__}")
    print(f"\nsynthetic test split, {len(args.seeds)} seed(s) {args.seeds}, mean ± std over seeds:")
    print(markdown_table(summary))
    gains = {v: paired_gains(results, v) for v in args.variants if v != "clip" and "clip" in args.variants}
    for variant, gain in gains.items():
        print(f"{variant} - clip, same seeds: " + ", ".join(f"{m} {gain[m]:+.3f}" for m in METRICS))
    timing = (f"{machine}; train.py runs {sum(r['train_s'] for r in results) / 60:.1f} min in all, "
              f"this invocation {wall_s / 60:.1f} min")
    print("orig_over_neg: the true caption beats its negation; zeroshot_neg: lower is better; "
          f"train_s: wall seconds of one train.py run. {timing}")

    command = "python bench/ablate.py " + " ".join(sys.argv[1:])
    (args.out / "ablation.json").write_text(json.dumps(
        {"command": command, "machine": machine, "wall_s": wall_s, "runs": results, "gains_vs_clip": gains,
         "summary": {v: {m: {"mean": a, "std": b} for m, (a, b) in s.items()} for v, s in summary.items()}},
        indent=2) + "\n")
    (args.out / "ablation.md").write_text(f"`{command}` ({len(args.seeds)} seeds, mean ± sample std over seeds; "
                                          f"{timing})\n\n{markdown_table(summary)}\n", encoding="utf-8")
    print(f"wrote {args.out / 'ablation.json'} and {args.out / 'ablation.md'}")

    if set(FIGURE_VARIANTS) <= set(args.variants):
        seed = args.seeds[0]
        margins = {v: caption_margins(args, args.out / f"{v}_s{seed}") for v in FIGURE_VARIANTS}
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_text(histogram_svg(margins, FIGURE_VARIANTS,
                                             f"Caption vs its negation, synthetic test split, seed {seed}"),
                               encoding="utf-8")
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    run_cli(main)
