"""Evaluate a checkpoint: negation, paraphrase and retrieval benchmarks.

    python eval.py --bench synth                          # the built-in synthetic test split
    python eval.py --bench synth --ckpt out/ckpt.pt --out results.json

Every benchmark prints a table and, with --out, writes
{"bench", "checkpoint", "n", "metrics": {name: fraction}}.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from data import (DEFAULT_SYNTH_DIR, DataError, TripletDataset, read_triplets, run_cli, synth_classes,
                  tokenize)
from model import load_checkpoint


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path, device):
    """(model in eval mode on `device`, tokenizer name) from a train.py checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint does not exist; train one with `python train.py --out DIR` "
                        "and pass DIR/ckpt.pt")
    try:
        model, ckpt = load_checkpoint(path)
    except (RuntimeError, KeyError, TypeError, EOFError) as error:
        raise DataError(f"{path}: not a readable checkpoint ({str(error).splitlines()[0]})") from None
    return model.to(device).eval(), ckpt.get("tokenizer", "cl100k_base")


def _autocast(device):
    """bf16 on CUDA for speed; fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


@torch.inference_mode()
def embed_images(model, records, device, batch_size=256, workers=0, log=None):
    """Unit image embeddings [N, D] in record order, decoded in DataLoader workers."""
    dataset = TripletDataset(records, model.config.image_size, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         sampler=[(i, 0) for i in range(len(records))])
    chunks, done, start = [], 0, time.time()
    for images, *_ in loader:
        with _autocast(device):
            chunks.append(model.encode_image(images.to(device)).float().cpu())
        done += len(images)
        if log:
            rate = done / (time.time() - start)
            log(f"images {done}/{len(records)} | {rate:.0f} img/s | eta {(len(records) - done) / rate:.0f}s")
    return torch.cat(chunks)


@torch.inference_mode()
def embed_texts(model, texts, tokenizer, device, batch_size=1024):
    """Unit text embeddings [N, D]."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(texts[start: start + batch_size], model.config.context_length, tokenizer)
        tokens = tokens[:, : int(tokens.argmax(dim=1).max()) + 1]
        with _autocast(device):
            chunks.append(model.encode_text(tokens.to(device)).float().cpu())
    return torch.cat(chunks)


def recall_at(similarity, query_texts, item_texts, k):
    """Fraction of queries whose top-k items include one whose caption text equals the query's."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return sum(any(item_texts[j] == query for j in row) for query, row in zip(query_texts, top.tolist())) \
        / len(query_texts)


def evaluate_synth(model, tokenizer, data_root=DEFAULT_SYNTH_DIR, device="cpu", batch_size=256, limit=None):
    """Negation, retrieval and zero-shot metrics on the synthetic world's held-out split."""
    records = read_triplets(Path(data_root) / "test.jsonl", required=("paraphrase", "negation"))[:limit]
    captions = [r["caption"] for r in records]
    image = embed_images(model, records, device, batch_size)
    text = embed_texts(model, captions, tokenizer, device)
    paraphrase = embed_texts(model, [r["paraphrase"] for r in records], tokenizer, device)
    negation = embed_texts(model, [r["negation"] for r in records], tokenizer, device)
    metrics = {
        # Is the true caption closer to the image than its own negation? (strict >)
        "orig_over_neg": ((image * text).sum(1) > (image * negation).sum(1)).float().mean().item(),
        "t2i_r1": recall_at(text @ image.T, captions, captions, 1),
        "t2i_r5": recall_at(text @ image.T, captions, captions, 5),
        "i2t_r1": recall_at(image @ text.T, captions, captions, 1),
        "i2t_r5": recall_at(image @ text.T, captions, captions, 5),
        "para_t2i_r1": recall_at(paraphrase @ image.T, captions, captions, 1),
    }
    # Zero-shot colour-shape classification of the single-object images. With negated prompts
    # the argmax should NOT be the true class: a lower zeroshot_neg means negation is understood.
    classes = synth_classes()
    single = [i for i, r in enumerate(records) if len(r.get("objects", ())) == 1]
    labels = torch.tensor([classes.index(records[i]["objects"][0]) for i in single])
    for name, template in (("zeroshot_orig", "a photo of a {}"), ("zeroshot_neg", "this is not a photo of a {}")):
        prompts = embed_texts(model, [template.format(c) for c in classes], tokenizer, device)
        predicted = (image[single] @ prompts.T).argmax(dim=1)
        metrics[name] = (predicted == labels).float().mean().item() if single else float("nan")
    return len(records), metrics


def format_table(rows: dict, columns) -> str:
    """Rows {label: {metric: value}} as an aligned text table."""
    label_width = max(len("model"), *(len(label) for label in rows))
    widths = [max(len(c), 6) for c in columns]
    lines = ["  ".join([f"{'model':<{label_width}}"] + [f"{c:>{w}}" for c, w in zip(columns, widths)])]
    for label, metrics in rows.items():
        cells = [f"{metrics[c]:>{w}.3f}" if isinstance(metrics.get(c), float) else f"{str(metrics.get(c, '')):>{w}}"
                 for c, w in zip(columns, widths)]
        lines.append("  ".join([f"{label:<{label_width}}"] + cells))
    return "\n".join(lines)


def write_results(path, bench, checkpoint, n, metrics):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": bench, "checkpoint": str(checkpoint), "n": n, "metrics": metrics},
                               indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(
        description="Evaluate a SemCLIP/CLIP checkpoint.",
        epilog="examples:\n"
               "  python eval.py --bench synth\n"
               "  python eval.py --bench synth --ckpt out/ckpt.pt --data-root data/synth --out results.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", choices=["synth"], default="synth", help="benchmark (default: %(default)s)")
    parser.add_argument("--ckpt", type=Path, default=Path("out/ckpt.pt"), help="checkpoint (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_SYNTH_DIR,
                        help="benchmark data folder (default for synth: %(default)s)")
    parser.add_argument("--out", type=Path, help="write results JSON here")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1 (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items (a quick look)")
    args = parser.parse_args()
    model, tokenizer = load_model(args.ckpt, args.device)
    n, metrics = evaluate_synth(model, tokenizer, args.data_root, args.device, args.batch_size, args.limit)
    print(f"{args.bench}: {n} items, checkpoint {args.ckpt}")
    print(format_table({args.ckpt.parent.name or str(args.ckpt): metrics}, list(metrics)))
    if args.out:
        write_results(args.out, args.bench, args.ckpt, n, metrics)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
