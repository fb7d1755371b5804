"""The built-in synthetic negation world: see the paper's effect on a laptop CPU in minutes.

    python synth.py                                  # write data/synth (train.py does it on first use)
    python synth.py --out /tmp/w --n-train 2000 --n-test 200 --seed 1

Images hold 1-3 coloured shapes. Captions name them; paraphrases reorder and rephrase;
negations keep every content word and negate one object that IS present. As on the web, many
captions carry negation words that say nothing about the picture (", no filter"), so a plain
CLIP learns that "no"/"not"/"without" carry no meaning -- and is fooled by negations.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torchvision.io

from errors import run_cli

DEFAULT_SYNTH_DIR = Path(__file__).resolve().parent / "data" / "synth"


SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
           "yellow": (235, 215, 40), "purple": (160, 60, 200), "white": (240, 240, 240)}
DISTRACTORS = (", no filter", ", not edited", ", without flash")
PARAPHRASE_TEMPLATES = ("there is {}", "an image of {}", "a photo of {}", "this picture shows {}", "{}")
SYNTH_CANVAS = 64


def _shape_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":
        return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    arm = radius * 0.32
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))


def _render(objects, rng: np.random.Generator) -> np.ndarray:
    """Objects as (colour, shape, cx, cy, radius) on a dark noisy background -> uint8 [H, W, 3]."""
    background = rng.uniform(0, 70, size=3) + rng.uniform(0, 40)
    canvas = np.empty((SYNTH_CANVAS, SYNTH_CANVAS, 3), np.float32)
    canvas[:] = background
    for colour, shape, cx, cy, radius in objects:
        tint = np.array(COLOURS[colour], np.float32) * rng.uniform(0.85, 1.0)
        canvas[_shape_mask(shape, cx, cy, radius, SYNTH_CANVAS)] = tint
    canvas += rng.normal(0, 8, size=canvas.shape)
    return canvas.clip(0, 255).astype(np.uint8)


def _place(count: int, rng: np.random.Generator):
    """Non-overlapping centres and radii, with a margin so that a 90% crop keeps every object."""
    while True:
        radii = rng.uniform(8, 13, size=count)
        centres = rng.uniform(16, SYNTH_CANVAS - 16, size=(count, 2))
        gaps = [np.hypot(*(centres[i] - centres[j])) - radii[i] - radii[j]
                for i in range(count) for j in range(i)]
        if all(gap > 2 for gap in gaps):
            return centres, radii


def _join(phrases) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _negate(phrases, target: int, rng: np.random.Generator) -> str:
    """Negate one present object, in one of several forms, keeping every other word."""
    negated = phrases[target].removeprefix("a ")
    rest = phrases[:target] + phrases[target + 1:]
    if not rest:
        return str(rng.choice([f"no {negated}", f"there is no {negated}", f"not a {negated}"]))
    form = rng.integers(3)
    if form == 0:
        return _join(phrases[:target] + [f"no {negated}"] + phrases[target + 1:])
    linker = ("but no", "without a", "and not a")[rng.integers(3)]
    return f"{_join(rest)} {linker} {negated}"


def synth_example(rng: np.random.Generator):
    """One (image, caption, paraphrase, negation, object names) of the synthetic world."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    kinds = sorted(rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False))
    names = [(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)]) for k in kinds]
    centres, radii = _place(count, rng)
    image = _render([(c, s, x, y, r) for (c, s), (x, y), r in zip(names, centres, radii)], rng)
    phrases = [f"a {colour} {shape}" for colour, shape in names]
    distractor = str(rng.choice(DISTRACTORS)) if rng.random() < 0.5 else ""
    caption = _join(phrases) + distractor
    shuffled = [phrases[i] for i in rng.permutation(count)]
    paraphrase = str(rng.choice(PARAPHRASE_TEMPLATES)).format(_join(shuffled)) + distractor
    negation = _negate(phrases, int(rng.integers(count)), rng) + distractor
    return image, caption, paraphrase, negation, [f"{colour} {shape}" for colour, shape in names]


def write_synth(out, n_train: int = 10000, n_test: int = 1000, seed: int = 0, log=print):
    """Write images/*.png, train.jsonl and test.jsonl; the same seed gives the same files."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(count):
            image, caption, paraphrase, negation, objects = synth_example(rng)
            name = f"images/{split}_{i:06d}.png"
            torchvision.io.write_png(torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(out / name))
            lines.append(json.dumps({"image": name, "caption": caption, "paraphrase": paraphrase,
                                     "negation": negation, "id": f"{split}_{i:06d}", "objects": objects}))
        temporary = out / f"{split}.jsonl.tmp"
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        temporary.replace(out / f"{split}.jsonl")
        log(f"wrote {count} {split} triplets to {out / (split + '.jsonl')}")
    return out


def synth_classes():
    """Zero-shot classes of the synthetic world: every colour-shape pair."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="synth.py", description="Write the built-in synthetic negation world (images + triplets JSONL).",
        epilog="examples:\n"
               "  python synth.py\n"
               "  python synth.py --out /tmp/w --n-train 2000 --n-test 200 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_SYNTH_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=10000, help="training triplets (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=1000, help="held-out triplets (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.n_train < 1 or args.n_test < 1:
        parser.error("--n-train and --n-test must be at least 1")
    write_synth(args.out, args.n_train, args.n_test, args.seed)


if __name__ == "__main__":
    run_cli(main)
