"""The README's figure, drawn from committed results files: multiple-choice accuracy by the kind of the
true answer (affirmation "X", negation "no Y", hybrid "X but no Y") for the main fine-tunes.

    python bench/figures.py            # writes docs/mcq.svg from results/
"""

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablate", ROOT / "bench" / "ablate.py")
ablate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablate)

# label on the figure: the results files of its seeds
ROWS = {"pretrained": "results/finetune/pretrained.json", "clip": "results/finetune/clip/s*.json",
        "negclip": "results/finetune/negclip/s*.json", "semclip": "results/finetune/semclip/s*.json",
        "clip + true neg.": "results/finetune/clip_tn0.1/s*.json",
        "semclip_tn + true neg.": "results/finetune/T_P_H_F/s*.json", "best recipe R28": "results/recipe/R28/s*.json"}


def summary_of(pattern: str) -> dict:
    """{metric: (mean, std)} over the files `pattern` matches (std 0 for one file)."""
    runs = [json.loads(path.read_text())["metrics"] for path in sorted(ROOT.glob(pattern))]
    if not runs:
        sys.exit(f"error: {pattern} matches no results file; run it first (docs/ablation.md)")
    return {m: (statistics.mean(r[m] for r in runs), statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0)
            for m in ablate.MCQ_COLOURS}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Draw docs/mcq.svg from the committed results files.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mcq.svg", help="(default: %(default)s)")
    out = parser.parse_args(argv).out
    summary = {label: summary_of(pattern) for label, pattern in ROWS.items()}
    out.write_text(ablate.mcq_bars_svg(summary, "Fine-tunes of one pretrained CLIP: which true answer is picked"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
