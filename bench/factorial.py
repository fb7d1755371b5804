"""What the recipe is made of: the main effect of each of its four parts, from a half-fraction factorial
of fine-tunes of the same pretrained CLIP (docs/ablation.md).

The parts (each on or off): T = L_truth (`--truth-weight 1`), P = true negations in 10% of the
training captions (`--true-negations 0.1`), H = NegCLIP's hard negatives (`--loss semclip_hn`),
F = L_para on the full embedding (`--paraphrase-projections 96`); the base is `--loss semclip`.
The eight cells with an even number of parts on (defining relation I = TPHF, resolution IV: each
main effect is free of the others and of every two-part interaction, aliased only with a
three-part one) are runs results/finetune/<cell>/s<seed>.json, cell "semclip" being all off:

    effect(part, metric) = mean over the cells with the part on - mean over the cells with it off

each cell first averaged over its seeds. Writes results/finetune/effects/<part>.json, which the
docs render (results.py).

    python bench/factorial.py
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval import write_results  # noqa: E402

PARTS = {"T": "L_truth", "P": "true negations in 10% of captions", "H": "hard negatives",
         "F": "L_para on the full embedding"}
CELLS = ("semclip", "T_P", "T_H", "T_F", "P_H", "P_F", "H_F", "T_P_H_F")  # each cell: the parts that are on


def cell_means(folder: Path) -> dict:
    """{cell: {metric: mean over seeds}}, from folder/<cell>/s*.json, for the metrics every run reports
    (runs made before eval.py added a metric lack it)."""
    means = {}
    for cell in CELLS:
        runs = [json.loads(p.read_text())["metrics"] for p in sorted((folder / cell).glob("s*.json"))]
        if not runs:
            sys.exit(f"error: {folder / cell}: no s*.json results; run the cell first (docs/ablation.md)")
        shared = [m for m in runs[0] if all(m in r for r in runs)]
        means[cell] = {m: statistics.mean(r[m] for r in runs) for m in shared}
    return means


def main_effects(means: dict) -> dict:
    """{part: {metric: mean(part on) - mean(part off)}}."""
    metrics = [m for m in next(iter(means.values())) if all(m in cell for cell in means.values())]
    effects = {}
    for part in PARTS:
        on = [cell for cell in means if part in cell.split("_")]
        off = [cell for cell in means if cell not in on]
        effects[part] = {m: statistics.mean(means[c][m] for c in on) - statistics.mean(means[c][m] for c in off)
                         for m in metrics}
    return effects


def main(argv=None):
    parser = argparse.ArgumentParser(description="Main effects of the recipe's parts from the factorial's results.")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "finetune",
                        help="the folder of the cells' results (default: %(default)s)")
    folder = parser.parse_args(argv).results
    for part, effect in main_effects(cell_means(folder)).items():
        path = folder / "effects" / f"{part}.json"
        write_results(path, "synth", None, len(CELLS), effect, part=PARTS[part])
        print(f"{part} ({PARTS[part]}): " + ", ".join(f"{m} {v:+.3f}" for m, v in effect.items()))


if __name__ == "__main__":
    main()
