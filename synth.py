"""The built-in synthetic negation world: see the paper's effect on a laptop CPU in minutes.

    python synth.py                                  # write data/synth (train.py does it on first use)
    python synth.py --out /tmp/w --n-train 2000 --n-test 200 --seed 1
    python synth.py --out data/synth-true-neg0.3 --true-negations 0.3

Images hold 1-3 coloured shapes. Captions name them; paraphrases reorder, re-template and
speak in synonyms (crimson for red, box for square) that captions almost never use;
negations keep every content word and negate one object that IS present. As on the web, many
captions carry negation words that say nothing about the picture (", no filter"), so a plain
CLIP learns that "no"/"not"/"without" carry no meaning -- and is fooled by negations.

Every record also has a `true_negation`: a true statement that negates an ABSENT object, in one
of three placements, a third each: alone ("there is no green cross", whose negation is "a green
cross"), in place, first ("no green cross, a red circle"), after the list ("a red circle but no
green cross"). --loss semclip_tn trains on it. With --true-negations P, a fraction P of the
training captions ARE that true negation (and their paraphrases and negations follow);
--reword-negations makes those paraphrases say the negation in another of the world's words
("no Y" -> "there is no Y", "but no" -> "without a"), so L_para teaches that the forms are one. The
held-out split never does, and it is the same for every P: the images, captions and the
randomness behind them come from their own stream of the seed.

The paper's world also has a web split (--n-web; train.py writes 10,000): images with captions
only, none shared with the triplets, that pretrain the CLIP every default run fine-tunes
(pretrain.py). --negation-heldout K keeps K classes out of every training negation.
"""

import argparse
import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.io

from errors import DataError, fraction, non_negative_int, number, run_cli

DEFAULT_SYNTH_DIR = Path(__file__).resolve().parent / "data" / "synth"


SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
           "yellow": (235, 215, 40), "purple": (160, 60, 200), "white": (240, 240, 240)}
# ordinary English synonyms: paraphrases use them for most words, captions for very few
SYNONYMS = {"red": "crimson", "green": "lime", "blue": "navy", "yellow": "golden", "purple": "violet",
            "white": "snowy", "circle": "disc", "square": "box", "triangle": "wedge", "cross": "plus"}
PARAPHRASE_SYNONYM_RATE, CAPTION_SYNONYM_RATE = 0.8, 0.01  # per colour or shape word
DISTRACTORS = (", no filter", ", not edited", ", without flash")
PARAPHRASE_TEMPLATES = ("there is {}", "an image of {}", "a photo of {}", "this picture shows {}", "{}")
# how the world negates an object: alone, and after a list of the others
NEGATION_FORMS = ("no {}", "there is no {}", "not a {}")
NEGATION_LINKERS = ("but no", "without a", "and not a")
SYNTH_CANVAS = 64
WORLD_VERSION = 4  # world.json records it: train.py refuses a world written by other settings


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
        return str(rng.choice(NEGATION_FORMS)).format(negated)
    form = rng.integers(3)
    if form == 0:
        return _join(phrases[:target] + [f"no {negated}"] + phrases[target + 1:])
    linker = NEGATION_LINKERS[rng.integers(3)]
    return f"{_join(rest)} {linker} {negated}"


def synonymize(text: str, rate: float, rng: np.random.Generator = None) -> str:
    """Each colour or shape word replaced by its synonym with probability `rate` (1: all, 0: none)."""
    swap = lambda word: SYNONYMS[word] if rate >= 1 or (rate > 0 and rng.random() < rate) else word  # noqa: E731
    return re.sub(r"[a-z]+", lambda match: swap(match[0]) if match[0] in SYNONYMS else match[0], text)


def synth_example(rng: np.random.Generator, true_negation_rate: float = 0.0, heldout=(), reword=False):
    """One (image, texts, object names) of the synthetic world; texts = {caption, paraphrase,
    negation, true_negation}, true_negation a true statement negating an absent object. No
    negation, false or true, negates a class in `heldout` (None where every object is held out:
    draw again). reword: a true negation's paraphrase negates in the next of the world's forms.

    The same draws are made whatever true_negation_rate and reword are: they change texts, never images."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    kinds = sorted(rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False))
    names = [(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)]) for k in kinds]
    centres, radii = _place(count, rng)
    image = _render([(c, s, x, y, r) for (c, s), (x, y), r in zip(names, centres, radii)], rng)
    phrases = [synonymize(f"a {colour} {shape}", CAPTION_SYNONYM_RATE, rng) for colour, shape in names]
    distractor = str(rng.choice(DISTRACTORS)) if rng.random() < 0.5 else ""
    shuffled = [phrases[i] for i in rng.permutation(count)]
    template = str(rng.choice(PARAPHRASE_TEMPLATES))
    paraphrase = synonymize(template.format(_join(shuffled)), PARAPHRASE_SYNONYM_RATE, rng)
    negatable = [i for i, (colour, shape) in enumerate(names) if f"{colour} {shape}" not in heldout]
    if not negatable:
        return None
    negation = _negate(phrases, negatable[int(rng.integers(len(negatable)))], rng)
    # a true statement: one object that is NOT in the picture, negated in one of three placements
    absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if (c, s) not in names and f"{c} {s}" not in heldout]
    linker, thing = NEGATION_LINKERS[rng.integers(3)], absent[rng.integers(len(absent))]
    thing_paraphrased = synonymize(thing, PARAPHRASE_SYNONYM_RATE, rng)
    placement, caption, prefix = rng.integers(3), _join(phrases), template.removesuffix("{}")
    form = NEGATION_LINKERS.index(linker)
    # the paraphrase's form: the same, or reworded into the next one ("no Y" -> "there is no Y" -> "not a Y")
    said = (form + 1) % 3 if reword else form
    if placement == 0:  # alone, as NegBench's negation captions: "there is no Y", whose negation is "a Y"
        true = {"caption": NEGATION_FORMS[form].format(thing), "negation": f"a {thing}",
                "paraphrase": NEGATION_FORMS[said].format(thing_paraphrased)}
    elif placement == 1:  # in place, first: "no Y, a red circle and ..."
        true = {"caption": f"no {thing}, {caption}", "negation": f"no {thing}, {negation}",
                "paraphrase": f"{prefix}no {thing_paraphrased}, {paraphrase[len(prefix):]}"}
    else:  # after the list: "... but no Y"
        true = {"caption": f"{caption} {linker} {thing}", "negation": f"{negation} {linker} {thing}",
                "paraphrase": f"{paraphrase} {NEGATION_LINKERS[said]} {thing_paraphrased}"}
    texts = {"caption": caption, "paraphrase": paraphrase, "negation": negation, "true_negation": true["caption"]}
    if rng.random() < true_negation_rate:
        texts.update(true)
    return image, {k: v + distractor for k, v in texts.items()}, [f"{c} {s}" for c, s in names]


def heldout_classes(seed: int, count: int) -> list:
    """`count` colour-shape classes that no training negation names, drawn from their own stream."""
    classes = synth_classes()
    return sorted(classes[i] for i in np.random.default_rng([seed, 3]).choice(len(classes), count, replace=False))


def _write_split(out: Path, split_number: int, split: str, count: int, seed: int, true_negations: float, heldout,
                 reword: bool):
    """One split's images and OUT/<split>.jsonl, from its own stream of the seed; (path, count)."""
    rng, lines = np.random.default_rng([seed, split_number]), []
    for i in range(count):
        example = None
        while example is None:  # a held-out-only image has nothing to negate: draw another
            example = synth_example(rng, true_negations, heldout, reword)
        image, texts, objects = example
        name = f"images/{split}_{i:06d}.png"
        torchvision.io.write_png(torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(out / name))
        lines.append(json.dumps({"image": name, **texts, "id": f"{split}_{i:06d}", "objects": objects}))
    temporary = out / f"{split}.jsonl.tmp"
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return temporary.replace(out / f"{split}.jsonl"), count


def write_synth(out, n_train: int = 10000, n_test: int = 1000, seed: int = 0, true_negations: float = 0.0,
                n_web: int = 0, negation_heldout: int = 0, reword_negations: bool = False, log=print):
    """Write images/*.png, train.jsonl, test.jsonl, web.jsonl (n_web > 0: images with captions for
    pretraining, never used as triplets) and world.json; the same settings give the same files.
    Each split draws from its own stream of the seed: the test split is the same whatever n_train,
    n_web, negation_heldout and true_negations (which only the training captions carry) are.
    negation_heldout K: K classes no training negation or true negation names (they are still in
    affirmed captions), so eval.py can ask whether negation works on classes never negated.
    reword_negations: the true negations' paraphrases negate in another form (synth_example)."""
    if not 0 <= true_negations <= 1:
        raise DataError(f"true_negations is a fraction of the training captions, not {true_negations}")
    out, heldout = Path(out), heldout_classes(seed, negation_heldout)
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits = [(out, split_number, split, count, seed, true_negations if split == "train" else 0.0,
               heldout if split == "train" else (), reword_negations) for split_number, (split, count) in
              enumerate((("train", n_train), ("test", n_test), ("web", n_web))) if count]
    # the splits are independent streams: on two processes when it pays, the same files either way
    if n_train + n_web >= 4000:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            written = list(pool.map(_write_split, *zip(*splits)))
    else:
        written = [_write_split(*split) for split in splits]
    for path, count in written:
        log(f"wrote {count} {path.stem} triplets to {path}")
    settings = {"version": WORLD_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test, "n_web": n_web,
                "true_negations": true_negations, "negation_heldout": negation_heldout, "heldout_classes": heldout,
                "reword_negations": reword_negations}
    (out / "world.json").write_text(json.dumps(settings) + "\n")
    return out


def world_settings(folder) -> dict:
    """The settings world.json records ({} for a world written before world.json existed)."""
    path = Path(folder) / "world.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def world_dir(synth_dir, true_negations: float = 0.0, negation_heldout: int = 0, reword_negations=False) -> Path:
    """The world to train on: synth_dir (the paper's world), or its sibling SYNTH_DIR-true-negP-heldoutK-reworded
    with true negations / held-out classes / reworded negations (the same seed and sizes: the same
    images and test split)."""
    synth_dir = Path(synth_dir)
    suffix = (f"-true-neg{true_negations:g}" if true_negations else "") + \
        (f"-heldout{negation_heldout}" if negation_heldout else "") + ("-reworded" if reword_negations else "")
    return synth_dir.with_name(synth_dir.name + suffix)


WEB_IMAGES = 10000  # the paper's world's web split: pretraining's images and captions


def write_missing_worlds(synth_dir, true_negations: float = 0.0, negation_heldout: int = 0, reword_negations=False,
                         log=print):
    """Write world_dir(...) if missing, and the paper's world (with its web split: WEB_IMAGES unless
    its world.json says otherwise) too; sizes and seed from synth_dir's world.json, if any."""
    paper, settings = Path(synth_dir), world_settings(synth_dir)
    sizes = {k: v for k, v in settings.items() if k in ("seed", "n_train", "n_test")}
    for world in dict.fromkeys([paper, world_dir(synth_dir, true_negations, negation_heldout, reword_negations)]):
        if not ((world / "train.jsonl").is_file() and (world / "test.jsonl").is_file()):
            log(f"writing the synthetic negation world to {world} (once)")
            variant = {"n_web": settings.get("n_web", WEB_IMAGES)} if world == paper else \
                {"true_negations": true_negations, "negation_heldout": negation_heldout,
                 "reword_negations": reword_negations}
            write_synth(world, **sizes, **variant, log=log)


def checked_world(synth_dir, true_negations: float = 0.0, negation_heldout: int = 0, reword_negations=False) -> Path:
    """world_dir(...), or a DataError if its world.json says another version or variant wrote it."""
    world = world_dir(synth_dir, true_negations, negation_heldout, reword_negations)
    settings = world_settings(world)
    written = (settings.get("version"), settings.get("true_negations"), settings.get("negation_heldout"),
               settings.get("reword_negations", False))  # v4 worlds written before the option never reword
    if written != (WORLD_VERSION, true_negations, negation_heldout, reword_negations):
        raise DataError(f"{world}: written by other settings ({settings or 'an older synth.py'}), not version "
                        f"{WORLD_VERSION} with --true-negations {true_negations:g} --negation-heldout "
                        f"{negation_heldout}{' --reword-negations' if reword_negations else ''}; "
                        "delete the folder to rewrite it")
    return world


def synth_classes():
    """Zero-shot classes of the synthetic world: every colour-shape pair."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


MCQ_KINDS = ("affirmation", "negation", "hybrid")
# Negations in forms and positions no training caption uses, made only of the world's words
UNSEEN_NEGATION_FORMS = ("there is not a {}", "without a {}")
UNSEEN_HYBRID_FORMS = ("{present} and no {absent}", "this picture shows {present} but not a {absent}")


def negation_probes(objects, kind: str, rng: np.random.Generator, absent_from=None) -> dict:
    """Test-only texts about an image showing `objects` ("red circle", ...) that a "negation word =
    push away" shortcut cannot get right. Y: an absent object, x: a present one, X: all of them.

    choices, answer: a NegBench-style 4-way question whose one true caption is of `kind`:
        affirmation "X" | negation "no Y" | hybrid "X but no Y"; the three wrong ones are the
        same templates made false: "a Y" | "no x" | "a Y but no x" (roles swapped).
    unseen_choices: the same question with negations in forms training never uses.
    true_negation "X but no Y" vs false_affirmation "X and a Y" and false_negation (x negated).
    absent_from: the classes Y is drawn from (default: every class; never one in the image).
    """
    absent = [c for c in (absent_from or synth_classes()) if c not in objects]
    y, x = absent[rng.integers(len(absent))], objects[rng.integers(len(objects))]
    present = [f"a {o}" for o in objects]
    everything = _join(present)
    negation, linker = NEGATION_FORMS[rng.integers(3)], NEGATION_LINKERS[rng.integers(3)]
    unseen_negation = UNSEEN_NEGATION_FORMS[rng.integers(2)]
    unseen_hybrid = UNSEEN_HYBRID_FORMS[rng.integers(2)]
    # (true, false) per template kind
    seen = {"affirmation": (everything, f"a {y}"),
            "negation": (negation.format(y), negation.format(x)),
            "hybrid": (f"{everything} {linker} {y}", f"a {y} {linker} {x}")}
    unseen = {"affirmation": seen["affirmation"],
              "negation": (unseen_negation.format(y), unseen_negation.format(x)),
              "hybrid": (unseen_hybrid.format(absent=y, present=everything),
                         unseen_hybrid.format(absent=x, present=f"a {y}"))}
    slots = rng.permutation(4)  # slots[0]: where the true caption goes

    def question(pairs):
        """This kind's true caption and every kind's false one, in slot order."""
        texts = [pairs[kind][0]] + [pairs[k][1] for k in MCQ_KINDS]
        return [text for _, text in sorted(zip(slots, texts))]

    return {"kind": kind, "choices": question(seen), "unseen_choices": question(unseen), "answer": int(slots[0]),
            "true_negation": f"{everything} but no {y}", "false_affirmation": _join(present + [f"a {y}"]),
            "false_negation": _negate(present, objects.index(x), rng)}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="synth.py", description="Write the built-in synthetic negation world (images + triplets JSONL).",
        epilog="examples:\n"
               "  python synth.py\n"
               "  python synth.py --out /tmp/w --n-train 2000 --n-test 200 --seed 1\n"
               "  python synth.py --out data/synth-true-neg0.3 --true-negations 0.3\n"
               "  python synth.py --out data/synth-heldout4 --negation-heldout 4\n"
               "  python synth.py --out data/synth-true-neg0.5-reworded --true-negations 0.5 --reword-negations",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_SYNTH_DIR, help="output folder (default: %(default)s)")
    at_least_one = number(int, at_least=1)
    parser.add_argument("--n-train", type=at_least_one, default=10000, help="training triplets (default: %(default)s)")
    parser.add_argument("--n-test", type=at_least_one, default=1000, help="held-out triplets (default: %(default)s)")
    parser.add_argument("--n-web", type=non_negative_int, default=0,
                        help="web split: images with captions to pretrain on, never triplets (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--true-negations", type=fraction, default=0.0, metavar="P",
                        help="fraction of training captions that also negate an absent object (default: %(default)s)")
    parser.add_argument("--negation-heldout", type=number(int, at_least=0, at_most=len(synth_classes())), default=0,
                        metavar="K", help="K classes no training negation names (default: %(default)s)")
    parser.add_argument("--reword-negations", action="store_true",
                        help="true negations' paraphrases negate in another of the world's forms "
                             "('but no' -> 'without a')")
    args = parser.parse_args(argv)
    if args.reword_negations and not args.true_negations:
        parser.error("argument --reword-negations: needs --true-negations P > 0 (it rewords their paraphrases)")
    write_synth(args.out, args.n_train, args.n_test, args.seed, args.true_negations, args.n_web,
                args.negation_heldout, args.reword_negations)


if __name__ == "__main__":
    run_cli(main)
