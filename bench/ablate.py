"""The paper in miniature: CLIP vs negations-as-hard-negatives vs SemCLIP on the synthetic world,
each trained on the world as the paper has it (every training negation false) and on the world
where a fraction P of the training captions also carry a true negation (--true-negations P).
--protocol finetune (the default, the paper's): every run fine-tunes the same pretrained CLIP with
its image tower frozen; --protocol scratch: every run from random weights.

    python bench/ablate.py                                       # every variant, fine-tuned, 3 seeds
    python bench/ablate.py --protocol scratch --steps 300        # every variant from random weights
    python bench/ablate.py --variants clip semclip --seeds 0 --true-negations 0
    python bench/ablate.py --steps 200 --batch-size 64           # unknown flags go to train.py as they are

A row is a variant on one world: `semclip` on the paper's world, `semclip_tn0.1` on the world
with P = 0.1. Every (row, seed) is one `python train.py --loss ... [--true-negations P] --seed S
--out OUT/<row>_s<S>` run, exactly the command a reader would type, timed from the outside, then
evaluated on the held-out split (eval.evaluate_synth, the same for every P) into
OUT/<row>_s<S>/results.json. The --main-rows run every seed, the others the first seed only.
A run whose results.json exists is skipped: rerun the same command to finish a killed ablation.

Writes OUT/ablation.json (every run, mean/std per row, the basis check), OUT/ablation.md (the
tables for the README), --figure (default OUT/margins.svg: for CLIP and SemCLIP, first seed, the
histogram over test items of cos(image, caption) - cos(image, negation)) and --mcq-figure
(default OUT/mcq.svg: multiple-choice accuracy by question type, per row).
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
from errors import DataError, count, fraction, non_negative_int, run_cli  # noqa: E402
from synth import DEFAULT_SYNTH_DIR, write_synth  # noqa: E402
from eval import default_device, embed_images, embed_texts, load_model, write_results  # noqa: E402
from loss import SemCLIPLoss  # noqa: E402

# variant name: its train.py flags. The paper's comparison, a caption-augmentation baseline, the
# projection size K, and the paraphrase term on the full embedding (the tiny model's width: 96).
VARIANTS = {
    "clip": ["--loss", "clip"],                                           # contrastive only
    "clip_aug": ["--loss", "clip", "--caption-augment", "paraphrase"],    # caption or paraphrase, at random
    "negclip": ["--loss", "negclip"],                                     # negations as extra hard negatives
    "semclip": ["--loss", "semclip"],                                     # paper defaults: K=2, fixed basis
    "semclip_k8": ["--loss", "semclip", "--num-projections", "8"],
    "semclip_k96": ["--loss", "semclip", "--num-projections", "96"],      # K = the embedding width
    "semclip_learnable": ["--loss", "semclip", "--learnable-projections"],
    "siglip": ["--loss", "siglip"],                                       # SemCLIP's terms, SigLIP's sigmoid
    "conclip": ["--loss", "conclip"],                                     # CoN-CLIP: distractor images
    # + NegCLIP's hard negatives: the negations are also wrong answers for the image; L_para full, L_neg in K=2
    "semclip_hn_para96": ["--loss", "semclip_hn", "--paraphrase-projections", "96"],
    # + L_truth: the image must prefer its true negation to its false one (the best recipe's loss)
    "semclip_tn_para96": ["--loss", "semclip_tn", "--paraphrase-projections", "96"],
}
ONLY_ON_THE_PAPERS_WORLD = ("semclip_learnable",)  # the basis check is about the paper's setting
METRICS = ("orig_over_neg", "t2i_r1", "i2t_r1", "para_t2i_r1", "syn_t2i_r1", "mcq", "mcq_affirmation",
           "mcq_negation", "mcq_hybrid", "mcq_unseen_forms", "trueneg_over_falseaff", "trueneg_over_falseneg",
           "zeroshot_orig", "zeroshot_neg")
OWN_TRAIN_FLAGS = ("--loss", "--seed", "--out", "--data", "--resume", "--from-scratch",
                   "--learnable-projections", "--num-projections", "--paraphrase-projections",
                   "--true-negations", "--caption-augment")
FIGURE_VARIANTS = {"clip": "#d9542b", "semclip": "#2b6cd9"}  # variant: colour
MCQ_COLOURS = {"mcq_affirmation": "#7f7f7f", "mcq_negation": "#d9542b", "mcq_hybrid": "#2b6cd9"}


def parse_args():
    parser = argparse.ArgumentParser(
        description="Train every loss variant with the same seed, data, steps and model on the synthetic "
                    "negation world, evaluate each on its test split, and print one table (mean +- std over seeds).",
        epilog="examples:\n"
               "  python bench/ablate.py --protocol scratch --steps 300 --figure docs/margins.svg\n"
               "  python bench/ablate.py --variants clip semclip --seeds 0 --steps 200\n"
               "  python bench/ablate.py --out runs/bs64 --batch-size 64   # unknown flags are passed to train.py\n"
               "variants: " + ", ".join(f"{name} ({' '.join(flags)})" for name, flags in VARIANTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT",
                        help="some of: %(choices)s (default: all)")
    parser.add_argument("--true-negations", nargs="+", type=fraction, default=[0.0, 0.1], metavar="P",
                        help="the worlds: fractions of training captions with a true negation (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: %(default)s)")
    parser.add_argument("--main-rows", nargs="*", default=["clip", "negclip", "semclip", "semclip_tn_para96_tn0.1"],
                        metavar="ROW", help="rows that run every seed; the others run the first (default: %(default)s)")
    parser.add_argument("--steps", type=count, help="optimizer steps per run (default: train.py's)")
    parser.add_argument("--synth-dir", type=Path, default=DEFAULT_SYNTH_DIR,
                        help="synthetic world, written once if missing (default: %(default)s)")
    parser.add_argument("--protocol", choices=("finetune", "scratch"), default="finetune",
                        help="finetune: every run fine-tunes the world's pretrained CLIP, image tower frozen (the "
                             "paper's protocol, train.py's default); scratch: every run from random weights "
                             "(train.py --from-scratch) (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="(default: runs/ablate-PROTOCOL)")
    parser.add_argument("--figure", type=Path, help="margin histogram SVG (default: OUT/margins.svg)")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the runs of these settings already finished in OUT")
    parser.add_argument("--mcq-figure", type=Path, help="MCQ accuracy by question type SVG (default: OUT/mcq.svg)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="train.py's DataLoader workers (default: %(default)s)")
    parser.add_argument("--device", default=default_device(), help="(default: %(default)s)")
    args, train_flags = parser.parse_known_args()
    clashes = [flag for flag in train_flags if flag.split("=")[0] in OWN_TRAIN_FLAGS]
    if clashes:
        parser.error(f"{clashes[0]}: the ablation sets this train.py flag itself")
    args.train_flags = train_flags
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds: each seed once")
    args.out = args.out or Path(f"runs/ablate-{args.protocol}")
    args.figure = args.figure or args.out / "margins.svg"
    args.mcq_figure = args.mcq_figure or args.out / "mcq.svg"
    return args


def row_name(variant, true_negations):
    return variant if true_negations == 0 else f"{variant}_tn{true_negations:g}"


def ablation_rows(args):
    """[(row, variant, P)]: every variant on every world, in the order asked (variant by variant)."""
    return [(row_name(v, p), v, p) for v in args.variants for p in args.true_negations
            if p == 0 or v not in ONLY_ON_THE_PAPERS_WORLD]


def train_command(args, variant, true_negations, seed, run_dir):
    steps = [] if args.steps is None else ["--steps", str(args.steps)]
    world = [] if true_negations == 0 else ["--true-negations", f"{true_negations:g}"]
    protocol = ["--from-scratch"] if args.protocol == "scratch" else []
    return [sys.executable, os.path.relpath(ROOT / "train.py"), *VARIANTS[variant], *world,
            "--seed", str(seed), *steps, *protocol, "--synth-dir", str(args.synth_dir), "--workers", str(args.workers),
            "--device", args.device, "--out", str(run_dir), *args.train_flags]


def run_one(args, row, variant, true_negations, seed, run_dir):
    """Train and evaluate (a subprocess, log in RUN/train.log), complete RUN/results.json; returns its dict."""
    if run_dir.exists():
        print(f"  discarding the unfinished run in {run_dir}")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = train_command(args, variant, true_negations, seed, run_dir)
    begin = time.time()
    with (run_dir / "train.log").open("w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    train_s = time.time() - begin
    if finished.returncode != 0:
        last = (run_dir / "train.log").read_text().strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"{row} seed {seed}: train.py failed ({last[0]}); full log {run_dir / 'train.log'}")
    # train.py evaluated the run on the held-out split (the same for every --true-negations) into results.json
    evaluated = json.loads((run_dir / "results.json").read_text())
    n, metrics = evaluated["n"], evaluated["metrics"]
    write_results(run_dir / "results.json", "synth", run_dir / "ckpt.pt", n, metrics, variant=row, seed=seed,
                  true_negations=true_negations, train_s=train_s, command="python " + " ".join(command[1:]))
    return json.loads((run_dir / "results.json").read_text())


def summarize(results, variants):
    """{row: {metric: (mean, std over seeds)}}; std is the sample std (0 with one seed)."""
    summary = {}
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        columns = {m: [r["metrics"][m] for r in runs] for m in METRICS} | {"train_s": [r["train_s"] for r in runs]}
        summary[variant] = {m: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                            for m, v in columns.items()} | {"seeds": (len(runs), 0.0)}
    return summary


def cell(metric, mean, std):
    if metric == "seeds":
        return f"{mean:.0f}"
    return f"{mean:.0f} ± {std:.0f}" if metric == "train_s" else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary, metrics=METRICS) -> str:
    """One row per variant, "mean ± std" cells, padded so that it reads as well in a terminal as in the README
    (eval.format_table is for single numbers)."""
    rows = [["variant", "seeds", *metrics, "train_s"]]
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


def side_by_side(summary, rows) -> str:
    """Metrics down, the given rows across: two recipes compared on every metric."""
    lines = ["| metric | " + " | ".join(f"`{r}`" for r in rows) + " |", "|---" + "|---:" * len(rows) + "|"]
    lines += [f"| {m} | " + " | ".join(cell(m, *summary[r][m]) for r in rows) + " |" for m in METRICS]
    return "\n".join(lines)


def negation_loss_under_bases(args, run_dir, seed, fresh=10):
    """L_neg = mean(max(0, cos(p(t), p(t-)))) of a run's test captions and negations, under the basis it
    trained with, the initial basis (seed S) and `fresh` random bases never seen in training."""
    records = read_triplets(args.synth_dir / "test.jsonl", ("paraphrase", "negation"))
    model, tokenizer = load_model(run_dir / "ckpt.pt", args.device)
    text, negation = (embed_texts(model, [r[k] for r in records], tokenizer, args.device)
                      for k in ("caption", "negation"))
    state = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)["loss"]
    dim = model.config.embed_dim
    trained = SemCLIPLoss(dim, learnable_projections=any(k.startswith("parametrizations") for k in state), seed=seed)
    trained.load_state_dict(state)
    scores = lambda loss: torch.relu(loss.projected_cosine(text, negation)).mean().item()  # noqa: E731
    with torch.no_grad():
        random_bases = [scores(SemCLIPLoss(dim, seed=1000 + k)) for k in range(fresh)]
        return {"trained": scores(trained), "initial": scores(SemCLIPLoss(dim, seed=seed)),
                "fresh_mean": statistics.mean(random_bases), "fresh_min": min(random_bases)}


def mcq_bars_svg(summary, title, width=720, height=340) -> str:
    """Grouped bars: MCQ accuracy by question type (affirmation, negation, hybrid) per row, a chance line."""
    rows, left, bottom, top = list(summary), 50, 130, 40
    group = (width - left - 20) / len(rows)
    bar = group * 0.8 / len(MCQ_COLOURS)
    y = lambda v: height - bottom - v * (height - bottom - top)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - 20}" y2="{y(tick):.1f}" '
                     f'stroke="{"black" if tick == 0 else "#dddddd"}"/>')
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<line x1="{left}" y1="{y(0.25):.1f}" x2="{width - 20}" y2="{y(0.25):.1f}" stroke="black" '
                 f'stroke-dasharray="4 3"/><text x="{width - 22}" y="{y(0.25) - 4:.1f}" '
                 'text-anchor="end">chance</text>')
    for i, row in enumerate(rows):
        x0 = left + i * group + group * 0.1
        for k, (metric, colour) in enumerate(MCQ_COLOURS.items()):
            value = summary[row][metric][0]
            parts.append(f'<rect x="{x0 + k * bar:.1f}" y="{y(value):.1f}" width="{bar - 1:.1f}" '
                         f'height="{y(0) - y(value):.1f}" fill="{colour}">'
                         f'<title>{row} {metric} {value:.3f}</title></rect>')
        parts.append(f'<text transform="translate({x0 + group * 0.4:.1f},{y(0) + 10:.1f}) rotate(40)">{row}</text>')
    for k, (metric, colour) in enumerate(MCQ_COLOURS.items()):
        parts.append(f'<rect x="{left + 10 + 150 * k}" y="26" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 24 + 150 * k}" y="35">{metric.removeprefix("mcq_")} (true caption)</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


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
    rows = ablation_rows(args)
    jobs = [(row, variant, p, seed) for seed in args.seeds for row, variant, p in rows
            if seed == args.seeds[0] or row in args.main_rows]
    results, begin, trained = [], time.time(), 0
    for k, (row, variant, true_negations, seed) in enumerate(jobs, 1):
        run_dir = args.out / f"{row}_s{seed}"
        command = " ".join(train_command(args, variant, true_negations, seed, run_dir)[1:])
        if (run_dir / "results.json").is_file():
            done = json.loads((run_dir / "results.json").read_text())
            if done["command"] != f"python {command}":  # never mix runs of different settings in one table
                raise DataError(f"{run_dir} was trained by `{done['command']}`, not `python {command}`; "
                                "pick another --out or delete that folder")
            print(f"[{k}/{len(jobs)}] {row} seed {seed}: done before, reading {run_dir / 'results.json'} "
                  "(delete it to rerun)")
            results.append(done)
            continue
        if args.collect:
            print(f"[{k}/{len(jobs)}] {row} seed {seed}: not run, left out (--collect)")
            continue
        print(f"[{k}/{len(jobs)}] {row} seed {seed}: python {command}", flush=True)
        results.append(run_one(args, row, variant, true_negations, seed, run_dir))
        trained += 1
        elapsed = time.time() - begin
        metrics = results[-1]["metrics"]
        print(f"  orig_over_neg {metrics['orig_over_neg']:.3f} | mcq {metrics['mcq']:.3f} | "
              f"t2i_r1 {metrics['t2i_r1']:.3f} | train {results[-1]['train_s']:.0f}s | "
              f"elapsed {elapsed / 60:.1f} min | "
              f"eta {elapsed / trained * (len(jobs) - k) / 60:.1f} min", flush=True)
    wall_s = time.time() - begin

    names = [row for row, _, _ in rows if any(r["variant"] == row for r in results)]
    summary = summarize(results, names)
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, device {args.device}, "
               f"torch {torch.__version__}")
    print(f"\nthe paper's world's test split, seeds {args.seeds} for {args.main_rows}, {args.seeds[0]} for the rest; "
          "mean ± std over seeds:")
    print(markdown_table(summary))
    gains = {v: paired_gains(results, v) for v in names if v != "clip" and "clip" in names}
    for variant, gain in gains.items():
        print(f"{variant} - clip, same seeds: " + ", ".join(f"{m} {gain[m]:+.3f}" for m in METRICS))
    timing = (f"{machine}; train.py runs {sum(r['train_s'] for r in results) / 60:.1f} min in all, "
              f"this invocation {wall_s / 60:.1f} min")
    print("orig_over_neg: the true caption beats its negation; mcq*: chance 0.25; zeroshot_neg: lower is better; "
          f"train_s: wall seconds of one train.py run. {timing}")
    # Does a learned basis make L_neg hold only inside itself? L_neg of the test texts under other bases
    basis_check = {f"{row}_s{args.seeds[0]}": negation_loss_under_bases(args, args.out / f"{row}_s{args.seeds[0]}",
                                                                         args.seeds[0])
                   for row in ("semclip", "semclip_learnable") if row in names}
    for run, scores in basis_check.items():
        print(f"L_neg of {run}'s test texts: " + ", ".join(f"{k} basis {v:.3f}" for k, v in scores.items()))

    command = "python bench/ablate.py " + " ".join(sys.argv[1:])
    (args.out / "ablation.json").write_text(json.dumps(
        {"command": command, "machine": machine, "wall_s": wall_s, "runs": results, "gains_vs_clip": gains,
         "basis_check": basis_check,
         "summary": {v: {m: {"mean": a, "std": b} for m, (a, b) in s.items()} for v, s in summary.items()}},
        indent=2) + "\n")
    basis_lines = "".join(f"- L_neg of `{run}`'s test texts: " + ", ".join(f"{k} basis {v:.3f}" for k, v in
                                                                          scores.items()) + "\n"
                          for run, scores in basis_check.items())
    (args.out / "ablation.md").write_text(
        f"`{command}` (seeds {args.seeds} for {', '.join(args.main_rows)}; seed {args.seeds[0]} for the rest; "
        f"mean ± sample std over seeds; {timing})\n\n{markdown_table(summary)}\n\n{basis_lines}\n"
        "The main rows side by "
        f"side:\n\n{side_by_side(summary, [r for r in args.main_rows if r in names])}\n", encoding="utf-8")
    print(f"wrote {args.out / 'ablation.json'} and {args.out / 'ablation.md'}")

    args.mcq_figure.parent.mkdir(parents=True, exist_ok=True)
    args.mcq_figure.write_text(mcq_bars_svg(summary, "Which caption is true? Multiple choice by the true "
                                                     "caption's type, held-out split"), encoding="utf-8")
    if set(FIGURE_VARIANTS) <= set(names):
        seed = args.seeds[0]
        margins = {v: caption_margins(args, args.out / f"{v}_s{seed}") for v in FIGURE_VARIANTS}
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_text(histogram_svg(margins, FIGURE_VARIANTS,
                                             f"Caption vs its negation, synthetic test split, seed {seed}"),
                               encoding="utf-8")
    print(f"wrote {args.mcq_figure}" + (f" and {args.figure}" if set(FIGURE_VARIANTS) <= set(names) else ""))


if __name__ == "__main__":
    run_cli(main)
