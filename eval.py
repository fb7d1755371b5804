"""Evaluate a checkpoint: negation, paraphrase and retrieval benchmarks, read as users download them.

    python eval.py --bench synth                                    # the built-in synthetic test split
    python eval.py --bench cc_neg --data-root ~/ccneg --out results.json
    python eval.py --bench sugarcrepe_pp --data-root ~/scpp --image-dir ~/coco/val2017
    python eval.py --bench zeroshot --dataset cifar10 --data-root ~/torchvision
    python eval.py --bench all --data-root data                     # every bench found under data/

Every benchmark prints a table and, with --out, writes {"bench", "checkpoint", "n", "metrics": {name:
fraction}, "train_overlap", "train_caption_overlap"}: how many test items have an image file name /
a caption from the model's training data (overlap.py; null for published weights). Test images
seen in training also get a warning line on stderr. benchmarks.py reads each benchmark's files.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from benchmarks import (CCNEG_IMAGES, CCNEG_TEST_SIZE, NEGBENCH_CSV, NEGBENCH_RETRIEVAL, ZEROSHOT_DATASETS, MissingData,
                        read_ccneg, read_ccneg_csv, read_negbench_mcq, read_negbench_retrieval, read_sugarcrepe_pp,
                        read_zeroshot, require_file)
from data import IMAGE_TRANSFORMS, TripletDataset, image_transform, read_triplets
from errors import DataError, count, non_negative_int, one_line, run_cli
from model import describe_loaded, load_checkpoint
from overlap import count_overlap
from results import provenance
from synth import DEFAULT_SYNTH_DIR, MCQ_KINDS, negation_probes, synonymize, synth_classes, world_settings
from tokenizer import tokenize, trim_padding

DATA_DIR = DEFAULT_SYNTH_DIR.parent
BENCH_FOLDERS = {"synth": "synth", "cc_neg": "cc_neg", "sugarcrepe_pp": "sugarcrepe_pp", "zeroshot": "torchvision",
                 "negbench_mcq": "negbench", "negbench_retrieval": "negbench"}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def open_checkpoint(path, device, activation=None, image_transform=None):
    """(model in eval mode on `device`, checkpoint dict) from a train.py checkpoint or published
    weights; `activation` and `image_transform` override what the checkpoint records. A file that
    does not load is one DataError line (model.read_weights)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: checkpoint does not exist; train one with `python train.py --out DIR` "
                        "and pass DIR/ckpt.pt")
    model, ckpt = load_checkpoint(path, activation=activation)
    if image_transform:
        model.config = dataclasses.replace(model.config, image_transform=image_transform)
    return model.to(device).eval(), ckpt


def load_model(path, device, activation=None, image_transform=None):
    """(model in eval mode on `device`, tokenizer name) from a train.py checkpoint."""
    model, ckpt = open_checkpoint(path, device, activation, image_transform)
    return model, ckpt.get("tokenizer", "cl100k_base")


def _autocast(device):
    """bf16 on CUDA for speed; fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


# ----------------------------------------------------------------------------- embeddings (one path for every bench)

class ClassificationImages(torch.utils.data.Dataset):
    """A torchvision classification set as (image, label) items, keyed like TripletDataset by (index, seed)."""

    def __init__(self, dataset, image_size: int, limit=None, kind="clip"):
        self.dataset, self.transform = dataset, image_transform(image_size, train=False, kind=kind)
        self.size = min(len(dataset), limit or len(dataset))

    def __len__(self):
        return self.size

    def __getitem__(self, key):
        image, label = self.dataset[key[0]]
        return self.transform(TF.pil_to_tensor(image.convert("RGB"))), label


@torch.inference_mode()
def encode_images(model, dataset, device, batch_size=256, workers=0):
    """(unit image embeddings [N, D], the items' second fields) in dataset order, decoded in DataLoader workers."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         sampler=[(i, 0) for i in range(len(dataset))])
    chunks, seconds, start, shown = [], [], time.time(), 0.0
    for images, second, *_ in loader:
        with _autocast(device):
            chunks.append(model.encode_image(images.to(device)).float().cpu())
        seconds.extend(second.tolist() if torch.is_tensor(second) else second)
        if time.time() - shown >= 5 or len(seconds) == len(dataset):  # a progress line every 5 s and at the end
            shown, rate = time.time(), len(seconds) / (time.time() - start)
            print(f"images {len(seconds)}/{len(dataset)} | {rate:.0f} img/s | "
                  f"eta {(len(dataset) - len(seconds)) / rate:.0f}s", file=sys.stderr)
    return torch.cat(chunks), seconds


def embed_images(model, records, device, batch_size=256, workers=0):
    """Unit image embeddings [N, D] of records {"image": Path, "where": ...}, in record order."""
    dataset = TripletDataset(records, model.config.image_size, train=False, kind=model.config.image_transform)
    return encode_images(model, dataset, device, batch_size, workers)[0]


def embed_shared_images(model, records, device, batch_size=256, workers=0):
    """embed_images of records that share image files (one COCO image, many items): each file embedded once."""
    unique = list({r["image"]: r for r in records}.values())
    row_of = {r["image"]: row for row, r in enumerate(unique)}
    return embed_images(model, unique, device, batch_size, workers)[[row_of[r["image"]] for r in records]]


@torch.inference_mode()
def embed_texts(model, texts, tokenizer, device, batch_size=1024):
    """Unit text embeddings [N, D]."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = trim_padding(tokenize(texts[start: start + batch_size], model.config.context_length, tokenizer))
        with _autocast(device):
            chunks.append(model.encode_text(tokens.to(device)).float().cpu())
    return torch.cat(chunks)


def cosine(a, b):
    """Row-wise cosine similarity of unit rows."""
    return (a * b).sum(dim=1)


def fraction(correct) -> float:
    """count / total, exactly as a hand count gives it (a float32 mean is off in the 8th digit)."""
    return int(correct.sum()) / len(correct) if len(correct) else float("nan")


def recall_at(similarity, query_texts, item_texts, k):
    """Fraction of queries whose top-k items include one whose caption text equals the query's."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return sum(any(item_texts[j] == query for j in row) for query, row in zip(query_texts, top.tolist())) \
        / len(query_texts)


# ----------------------------------------------------------------------------- synth

PROBE_SEED = 12  # the test-only probes are drawn from this seed: the same questions for every model


def multiple_choice(image, choices, answers):
    """Per item, is the argmax over its choices (embeddings [N, C, D]) of cos with the image the answer?"""
    return torch.einsum("nd,ncd->nc", image, choices).argmax(dim=1) == torch.as_tensor(answers)


def evaluate_synth(model, tokenizer, data_root=DEFAULT_SYNTH_DIR, device="cpu", batch_size=256, limit=None):
    """Negation, retrieval and zero-shot metrics on the synthetic world's held-out split."""
    records = read_triplets(Path(data_root) / "test.jsonl", required=("paraphrase", "negation"),
                            why="--bench synth scores paraphrases and negations; write the split with "
                                "`python data.py synth`")[:limit]
    lacking = next((r for r in records if not r.get("objects")), None)
    if lacking is not None:
        raise DataError(f"{lacking['where']}: no 'objects' list for the negation probes; rewrite it: python synth.py")
    captions = [r["caption"] for r in records]
    image = embed_images(model, records, device, batch_size)
    text = embed_texts(model, captions, tokenizer, device)
    paraphrase = embed_texts(model, [r["paraphrase"] for r in records], tokenizer, device)
    negation = embed_texts(model, [r["negation"] for r in records], tokenizer, device)
    # the captions with every colour and shape word in its synonym ("a crimson disc")
    synonyms = embed_texts(model, [synonymize(c, 1.0) for c in captions], tokenizer, device)
    metrics = {
        # Is the true caption closer to the image than its own negation? (strict >)
        "orig_over_neg": fraction(cosine(image, text) > cosine(image, negation)),
        "t2i_r1": recall_at(text @ image.T, captions, captions, 1),
        "t2i_r5": recall_at(text @ image.T, captions, captions, 5),
        "i2t_r1": recall_at(image @ text.T, captions, captions, 1),
        "i2t_r5": recall_at(image @ text.T, captions, captions, 5),
        "para_t2i_r1": recall_at(paraphrase @ image.T, captions, captions, 1),
        "syn_t2i_r1": recall_at(synonyms @ image.T, captions, captions, 1),
    }
    # Negation meaning, not the word: questions about objects that are / are not in the image,
    # item i asking for a true caption of kind MCQ_KINDS[i % 3] (see synth.negation_probes)
    rng = np.random.default_rng(PROBE_SEED)
    probes = [negation_probes(r["objects"], MCQ_KINDS[i % 3], rng) for i, r in enumerate(records)]
    answers, kinds = [p["answer"] for p in probes], np.array([p["kind"] for p in probes])
    for name, key in (("mcq", "choices"), ("mcq_unseen_forms", "unseen_choices")):
        choices = embed_texts(model, [c for p in probes for c in p[key]], tokenizer, device)
        correct = multiple_choice(image, choices.view(len(records), 4, -1), answers)
        metrics[name] = fraction(correct)
        # per kind: mcq_negation, ...; mcq_unseen_negation, mcq_unseen_hybrid (the affirmations are the same)
        prefix = "mcq" if key == "choices" else "mcq_unseen"
        metrics.update({f"{prefix}_{kind}": fraction(correct[kinds == kind]) for kind in MCQ_KINDS
                        if key == "choices" or kind != "affirmation"})
    true_negation, false_affirmation, false_negation = (
        cosine(image, embed_texts(model, [p[key] for p in probes], tokenizer, device))
        for key in ("true_negation", "false_affirmation", "false_negation"))
    metrics["trueneg_over_falseaff"] = fraction(true_negation > false_affirmation)
    metrics["trueneg_over_falseneg"] = fraction(true_negation > false_negation)
    # Negation as an operator, not a memorised phrase: in a world whose training negations never name
    # some classes (synth.py --negation-heldout), "no Y" questions about those Y, and about the others
    heldout = world_settings(data_root).get("heldout_classes")
    if heldout:
        seen = [c for c in synth_classes() if c not in heldout]
        for name, classes in (("mcq_negation_heldout", heldout), ("mcq_negation_seen", seen)):
            rng = np.random.default_rng(PROBE_SEED + 1)
            items = [i for i, r in enumerate(records) if set(classes) - set(r["objects"])]
            asked = [negation_probes(records[i]["objects"], "negation", rng, classes) for i in items]
            choices = embed_texts(model, [c for p in asked for c in p["choices"]], tokenizer, device)
            metrics[name] = fraction(multiple_choice(image[items], choices.view(len(items), 4, -1),
                                                     [p["answer"] for p in asked]))
    # Zero-shot colour-shape classification of the single-object images. With negated prompts
    # the argmax should NOT be the true class: a lower zeroshot_neg means negation is understood.
    classes = synth_classes()
    single = [i for i, r in enumerate(records) if len(r.get("objects", ())) == 1]
    labels = torch.tensor([classes.index(records[i]["objects"][0]) for i in single])
    for name, template in (("zeroshot_orig", "a photo of a {}"), ("zeroshot_neg", "this is not a photo of a {}")):
        prompts = embed_texts(model, [template.format(c) for c in classes], tokenizer, device)
        predicted = (image[single] @ prompts.T).argmax(dim=1)
        metrics[name] = fraction(predicted == labels)
    return len(records), metrics


# ----------------------------------------------------------------------------- metrics

def evaluate_cc_neg(model, tokenizer, records, device="cpu", batch_size=256, workers=0):
    """Correct when cos(image, caption) > cos(image, negated caption), strict; ties reported apart."""
    image = embed_images(model, records, device, batch_size, workers)
    caption = cosine(image, embed_texts(model, [r["caption"] for r in records], tokenizer, device))
    negation = cosine(image, embed_texts(model, [r["negation"] for r in records], tokenizer, device))
    return len(records), {"orig_over_neg": fraction(caption > negation), "ties": fraction(caption == negation)}


def evaluate_sugarcrepe_pp(model, tokenizer, categories, device="cpu", batch_size=256, workers=0):
    """Per category, strict >: ITT (image prefers both paraphrases to the negative), TOT (text only), Img-P1/P2."""
    records = [r for category in categories.values() for r in category]
    image = embed_shared_images(model, records, device, batch_size, workers)  # the categories share COCO images
    p1, p2, negative = (embed_texts(model, [r[key] for r in records], tokenizer, device)
                        for key in ("caption", "paraphrase", "negation"))
    img_p1, img_p2 = cosine(image, p1) > cosine(image, negative), cosine(image, p2) > cosine(image, negative)
    tot = (cosine(p1, p2) > cosine(p1, negative)) & (cosine(p1, p2) > cosine(p2, negative))
    scores = {"itt": img_p1 & img_p2, "tot": tot, "img_p1": img_p1, "img_p2": img_p2}
    metrics, start = {}, 0
    for category, items in categories.items():
        rows = slice(start, start + len(items))
        metrics.update({f"{category}/{name}": fraction(score[rows]) for name, score in scores.items()})
        start += len(items)
    for name in scores:  # the mean over categories, as the authors tabulate them
        metrics[f"mean/{name}"] = sum(metrics[f"{c}/{name}"] for c in categories) / len(categories)
    return len(records), metrics


def evaluate_zeroshot(model, tokenizer, dataset, device="cpu", batch_size=256, workers=0, limit=None):
    """Argmax over classes with "this is a photo of a {c}" and with "this is not a photo of a {c}"
    (the SemCLIP authors' prompts and raw torchvision class names); delta = orig_acc - neg_acc."""
    images = ClassificationImages(dataset, model.config.image_size, limit, model.config.image_transform)
    image, labels = encode_images(model, images, device, batch_size, workers)
    labels, metrics = torch.tensor(labels), {}
    for name, template in (("orig_acc", "this is a photo of a {}"), ("neg_acc", "this is not a photo of a {}")):
        prompts = embed_texts(model, [template.format(c) for c in dataset.classes], tokenizer, device)
        metrics[name] = fraction((image @ prompts.T).argmax(dim=1) == labels)
    return len(labels), {**metrics, "delta": metrics["orig_acc"] - metrics["neg_acc"]}


def evaluate_negbench_mcq(model, tokenizer, records, device="cpu", batch_size=256, workers=0):
    """4-way multiple choice: the caption closest to the image is the answer; accuracy per question type too
    (correct_answer_template: positive, negative, hybrid in the official files and code)."""
    image = embed_images(model, records, device, batch_size, workers)
    captions = embed_texts(model, [c for r in records for c in r["captions"]], tokenizer, device)
    correct = multiple_choice(image, captions.view(len(records), 4, -1), [r["answer"] for r in records])
    metrics = {"accuracy": fraction(correct)}
    for template in sorted({r["template"] for r in records}):
        metrics[f"{template}/accuracy"] = fraction(correct[[r["template"] == template for r in records]])
    return len(records), metrics


RECALL_AT = (1, 5, 10)


def evaluate_negbench_retrieval(model, tokenizer, files, device="cpu", batch_size=256, workers=0):
    """Text -> image Recall@1/5/10 per file ({name: records}), NegBench's protocol (its evaluation/retrieval.py):
    every caption of a row is a query whose one positive is that row's image, among the images of all the
    file's rows. n counts the queries of all files."""
    everything = [r for records in files.values() for r in records]
    images = embed_shared_images(model, everything, device, batch_size, workers).split(
        [len(records) for records in files.values()])  # the two files show the same COCO images: embed once
    metrics, n = {}, 0
    for (name, records), image in zip(files.items(), images):
        text = embed_texts(model, [c for r in records for c in r["captions"]], tokenizer, device)
        positive = torch.tensor([row for row, r in enumerate(records) for _ in r["captions"]])
        top = torch.cat([(queries @ image.T).topk(min(max(RECALL_AT), len(records)), dim=1).indices
                         for queries in text.split(1024)])  # 1024 queries at a time: COCO's 25k x 5k scores are 0.5 GB
        for k in RECALL_AT:
            metrics[f"{name}/t2i_r{k}"] = fraction((top[:, :k] == positive[:, None]).any(dim=1))
        n += len(positive)
    return n, metrics


# ----------------------------------------------------------------------------- reports and command line

def format_table(rows: dict, columns, corner="model") -> str:
    """Rows {label: {metric: value}} as an aligned text table."""
    label_width = max(len(corner), *(len(label) for label in rows))
    widths = [max(len(c), 6) for c in columns]
    lines = ["  ".join([f"{corner:<{label_width}}"] + [f"{c:>{w}}" for c, w in zip(columns, widths)])]
    for label, metrics in rows.items():
        cells = [f"{metrics[c]:>{w}.3f}" if isinstance(metrics.get(c), float) else f"{str(metrics.get(c, '')):>{w}}"
                 for c, w in zip(columns, widths)]
        lines.append("  ".join([f"{label:<{label_width}}"] + cells))
    return "\n".join(lines)


def print_report(name, label, n, metrics):
    """One table per bench; metrics named "row/column" (SugarCrepe++ categories, NegBench templates) get rows."""
    rows = {}
    for metric, value in metrics.items():
        row, _, column = metric.rpartition("/")
        rows.setdefault(row or label, {})[column] = value
    print(f"{name}: {n} items")
    print(format_table(rows, list(dict.fromkeys(c for row in rows.values() for c in row)),
                       corner="model" if list(rows) == [label] else "") + "\n")


def write_results(path, bench, checkpoint, n, metrics, **extra):
    """A results JSON (results.py renders the pages' tables from them); `seed=S` among `extra` also goes
    into its provenance: how to make the file again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": bench, "checkpoint": str(checkpoint), "n": n, "metrics": metrics, **extra,
                                "provenance": provenance(extra.get("seed"))}, indent=2) + "\n")



def run_bench(bench, dataset, root, args, model, tokenizer):
    """(n, metrics, test records or None) of one benchmark, its data under `root` unless a flag names
    a file; the records (image, caption) are what overlap.count_overlap checks."""
    common = (args.device, args.batch_size, args.workers)
    if bench == "synth":
        path = require_file(root / "test.jsonl", "write it with `python data.py synth --out DIR` or pass --data-root")
        return (*evaluate_synth(model, tokenizer, root, args.device, args.batch_size, args.limit),
                read_triplets(path)[:args.limit])
    if bench == "cc_neg":
        records = (read_ccneg_csv(args.ccneg_csv, args.image_dir or root / CCNEG_IMAGES, args.limit) if args.ccneg_csv
                   else read_ccneg(root, args.image_dir, args.split_size, args.limit))
        return (*evaluate_cc_neg(model, tokenizer, records, *common), records)
    if bench == "sugarcrepe_pp":
        categories = read_sugarcrepe_pp(root, args.image_dir, args.limit)
        return (*evaluate_sugarcrepe_pp(model, tokenizer, categories, *common),
                [r for records in categories.values() for r in records])
    if bench == "zeroshot":  # torchvision sets: no file names to compare
        return (*evaluate_zeroshot(model, tokenizer, read_zeroshot(dataset, root), *common, limit=args.limit), None)
    if bench == "negbench_retrieval":  # the test items are the queries
        files = {name: read_negbench_retrieval(root / file, args.image_root or root, args.limit)
                 for name, file in NEGBENCH_RETRIEVAL.items()}
        return (*evaluate_negbench_retrieval(model, tokenizer, files, *common),
                [{**r, "caption": caption} for records in files.values() for r in records for caption in r["captions"]])
    path = args.csv or root / NEGBENCH_CSV
    records = read_negbench_mcq(path, args.image_root or path.parent, args.limit)
    return (*evaluate_negbench_mcq(model, tokenizer, records, *common), records)


def report_overlap(name, train_fingerprint, records) -> dict:
    """{"train_overlap", "train_caption_overlap"} for the results JSON (null where not measurable);
    one warning line when test images were in the training data."""
    images, captions = count_overlap(train_fingerprint, records)
    if images:
        print(f"warning: {name}: {images} of {len(records)} test items have an image file name that was in "
              "the model's training data; these scores are not held-out", file=sys.stderr)
    return {"train_overlap": images, "train_caption_overlap": captions}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Evaluate a SemCLIP/CLIP checkpoint on negation and paraphrase benchmarks.",
        epilog="examples:\n"
               "  python eval.py --bench synth --ckpt out/semclip/ckpt.pt --out results.json\n"
               "  python eval.py --bench cc_neg --data-root ~/ccneg --workers 2  # ccneg_preprocessed.pt, images\n"
               "  python eval.py --bench cc_neg --ccneg-csv ccneg_paraphrased.csv --image-dir ~/ccneg/images\n"
               "  python eval.py --bench sugarcrepe_pp --data-root ~/scpp --image-dir ~/coco/val2017\n"
               "  python eval.py --bench zeroshot --dataset cifar100 --data-root ~/torchvision\n"
               "  python eval.py --bench negbench_mcq --csv COCO_val_mcq_llama3.1_rephrased.csv --image-root ~/coco\n"
               "  python eval.py --bench negbench_retrieval --data-root ~/negbench --image-root ~/coco/val2017\n"
               "  python eval.py --bench all --data-root data --out results.json  # data/{" + ",".join(
                   dict.fromkeys(BENCH_FOLDERS.values())) + "}; writes results.<bench>.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", choices=[*BENCH_FOLDERS, "all"], default="synth",
                        help="benchmark; all: every one whose data is found (default: %(default)s)")
    parser.add_argument("--ckpt", type=Path, default=Path("out/semclip/ckpt.pt"),
                        help="checkpoint (default: %(default)s, the default `python train.py` run's)")
    parser.add_argument("--data-root", type=Path, help="the bench's data folder (default: data/<bench folder>); "
                        "with --bench all, the folder holding one sub-folder per bench (default: data)")
    parser.add_argument("--image-dir", type=Path, help="cc_neg / sugarcrepe_pp images, if not in the default place")
    parser.add_argument("--ccneg-csv", type=Path, help="cc_neg from the SemCLIP authors' CSV instead of the .pt")
    parser.add_argument("--dataset", choices=list(ZEROSHOT_DATASETS), default="cifar10",
                        help="zeroshot: torchvision data set, already on disk (default: %(default)s)")
    parser.add_argument("--csv", type=Path, help=f"negbench_mcq: the MCQ CSV (default: <data-root>/{NEGBENCH_CSV})")
    parser.add_argument("--image-root", type=Path, help="negbench_mcq, negbench_retrieval: the folder the CSVs' image "
                        "paths are relative to; absolute ones are found there by file name (default: the CSV's folder)")
    parser.add_argument("--activation", choices=("gelu", "quick_gelu"),
                        help="the MLP activation, for published weights that do not record it (open_clip's "
                             "-quickgelu models need quick_gelu; default: recorded, else gelu)")
    parser.add_argument("--image-transform", choices=IMAGE_TRANSFORMS,
                        help="image preprocessing: clip or authors (see train.py --help; default: the checkpoint's)")
    parser.add_argument("--out", type=Path, help="write results JSON here")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1 (default: %(default)s)")
    parser.add_argument("--batch-size", type=count, default=256, help="images per batch (default: %(default)s)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="image-decoding processes (default: %(default)s)")
    parser.add_argument("--limit", type=count, help="evaluate only the first N items, a quick look "
                        "(negbench_retrieval: the first N images of each file)")
    parser.add_argument("--split-size", type=count, default=CCNEG_TEST_SIZE,
                        help="for tests only: cc_neg takes this many samples from the end of the .pt "
                             "(CoN-CLIP's test split: %(default)s)")
    args = parser.parse_args(argv)
    if args.bench == "all" and args.image_dir:
        parser.error("--image-dir names one bench's images; use it with a single --bench")
    return args


def main():
    args = parse_args()
    model, ckpt = open_checkpoint(args.ckpt, args.device, args.activation, args.image_transform)
    print(describe_loaded(args.ckpt, model.config, ckpt, args.activation), file=sys.stderr)
    tokenizer, train_fingerprint = ckpt.get("tokenizer", "cl100k_base"), ckpt.get("train_fingerprint")
    label = args.ckpt.parent.name or str(args.ckpt)
    every = args.bench == "all"
    jobs = [(bench, dataset) for bench in (BENCH_FOLDERS if every else [args.bench])
            for dataset in (ZEROSHOT_DATASETS if every and bench == "zeroshot" else [args.dataset])]
    skipped = []
    for bench, dataset in jobs:
        name = f"zeroshot/{dataset}" if bench == "zeroshot" else bench
        root = (args.data_root or DATA_DIR) / BENCH_FOLDERS[bench] if every \
            else args.data_root or DATA_DIR / BENCH_FOLDERS[bench]
        try:
            n, metrics, records = run_bench(bench, dataset, root, args, model, tokenizer)
        except MissingData as error:
            if not every:
                raise
            skipped.append(f"{name} ({one_line(error)})")
            continue
        print_report(name, label, n, metrics)
        overlap = report_overlap(name, train_fingerprint, records)
        if args.out:
            out = (args.out.with_name(f"{args.out.stem}.{name.replace('/', '.')}{args.out.suffix}") if every
                   else args.out)
            write_results(out, bench, args.ckpt, n, metrics, **overlap,
                          **({"dataset": dataset} if bench == "zeroshot" else {}))
            print(f"wrote {out}", file=sys.stderr)
    for line in skipped:
        print(f"skipped {line}")


if __name__ == "__main__":
    run_cli(main)
