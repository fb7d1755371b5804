"""Train CLIP / SemCLIP on (caption, paraphrase, negation) triplets.

    python train.py                                   # built-in synthetic world: train, evaluate, table
    python train.py --loss clip --out out/clip        # the plain-CLIP baseline on the same data
    python train.py --data triplets.jsonl --model small --steps 20000 --batch-size 256

Writes OUT/ckpt.pt (latest, atomic), OUT/args.json and OUT/metrics.jsonl.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from data import (DEFAULT_SYNTH_DIR, DataError, EpochBatches, TripletDataset, make_collate, read_triplets,
                  run_cli, write_synth)
from eval import default_device, evaluate_synth, format_table
from loss import LOSS_VARIANTS, SemCLIPLoss
from model import CLIP, ModelConfig

# The data keys each --loss trains on (the variants themselves are loss.LOSS_VARIANTS).
REQUIRED_KEYS = {"semclip": ("paraphrase", "negation"), "siglip": ("paraphrase", "negation"),
                 "clip": (), "negclip": ("negation",)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train CLIP / SemCLIP. With no --data, trains on the built-in synthetic negation world "
                    "(written on first use), then evaluates on its test split and prints a table.",
        epilog="examples:\n"
               "  python train.py\n"
               "  python train.py --loss clip --out out/clip\n"
               "  python train.py --data triplets.jsonl --model small --steps 20000 --out out/run1\n"
               "  python train.py --out out/run1 --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="triplets .jsonl or the SemCLIP authors' .csv "
                                                "(default: the synthetic world in data/synth)")
    data.add_argument("--synth-dir", type=Path, default=DEFAULT_SYNTH_DIR,
                      help="where the synthetic world lives when no --data is given (default: %(default)s)")
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: %(default)s)")
    model = parser.add_argument_group("model and loss")
    model.add_argument("--model", default="tiny", help="preset: tiny, small, B-32 (default: %(default)s)")
    model.add_argument("--loss", choices=list(LOSS_VARIANTS), default="semclip",
                       help="semclip (paper), clip (contrastive only), negclip (negations as hard "
                            "negatives), siglip (semclip with SigLIP's sigmoid contrastive term)")
    model.add_argument("--contrastive-weight", type=float, default=1.0, help="a in (aL_clip+bL_para+cL_neg)/(a+b+c)")
    model.add_argument("--paraphrase-weight", type=float, default=1.0, help="b (semclip only)")
    model.add_argument("--negation-weight", type=float, default=1.0, help="c (semclip only)")
    model.add_argument("--num-projections", type=int, default=2, help="K, rows of the projection basis")
    model.add_argument("--learnable-projections", action="store_true", help="learn the basis (default: fixed)")
    model.add_argument("--no-normalize-projections", action="store_true", help="skip normalising p(x)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    optim.add_argument("--steps", type=int, default=400, help="optimizer steps (default: %(default)s)")
    optim.add_argument("--epochs", type=float, help="train for this many epochs instead of --steps")
    optim.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    optim.add_argument("--weight-decay", type=float, default=0.1, help="AdamW, matrices only (default: %(default)s)")
    optim.add_argument("--warmup", type=int, default=40, help="linear warm-up steps (default: %(default)s)")
    optim.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm, 0 = off (default: %(default)s)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    run.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1 (default: %(default)s)")
    run.add_argument("--out", type=Path, default=Path("out"), help="run folder (default: %(default)s)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    run.add_argument("--log-every", type=int, default=20, help="progress line every N steps (default: %(default)s)")
    run.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "log_every", "save_every", "num_projections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.warmup < 0:
        parser.error("--workers and --warmup must be >= 0")
    try:
        ModelConfig.preset(args.model)
    except ValueError as error:
        parser.error(str(error))
    return args


def build_loss(args, embed_dim: int) -> SemCLIPLoss:
    settings = {"paraphrase_weight": args.paraphrase_weight, "negation_weight": args.negation_weight,
                **LOSS_VARIANTS[args.loss]}
    return SemCLIPLoss(embed_dim, contrastive_weight=args.contrastive_weight,
                       num_projections=args.num_projections, learnable_projections=args.learnable_projections,
                       normalize_projections=not args.no_normalize_projections, seed=args.seed, **settings)


def build_optimizer(args, model, loss_fn):
    """AdamW; no weight decay on gains, biases, embeddings-as-vectors and logit_scale (ndim < 2)."""
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step: int, args) -> float:
    """Linear warm-up to --lr, then cosine decay to zero at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.total_steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(path: Path, model, loss_fn, optimizer, step, args, tokenizer):
    """Write to a temporary file, then rename: a crash never leaves half a checkpoint."""
    state = {
        "model_config": asdict(model.config), "tokenizer": tokenizer, "model": model.state_dict(),
        "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def resolve_data(args):
    """The training file, writing the synthetic world first when no --data is given."""
    if args.data is not None:
        return args.data
    if not (args.synth_dir / "train.jsonl").is_file() or not (args.synth_dir / "test.jsonl").is_file():
        print(f"writing the synthetic negation world to {args.synth_dir} (once)")
        write_synth(args.synth_dir)
    return args.synth_dir / "train.jsonl"


def train(args):
    """Train per `args`; returns (model, tokenizer name). Rank-free, single process."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    config = ModelConfig.preset(args.model)
    tokenizer = "cl100k_base"
    records = read_triplets(resolve_data(args), required=REQUIRED_KEYS[args.loss])
    dataset = TripletDataset(records, config.image_size, train=True)
    steps_per_epoch = len(dataset) // args.batch_size
    args.total_steps = max(1, round(args.epochs * steps_per_epoch)) if args.epochs else args.steps

    model = CLIP(config).to(device)
    loss_fn = build_loss(args, config.embed_dim).to(device)
    optimizer = build_optimizer(args, model, loss_fn)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path, start_step = args.out / "ckpt.pt", 0
    if args.resume:
        if not ckpt_path.is_file():
            raise DataError(f"{ckpt_path}: no checkpoint to resume from; drop --resume or pick the right --out")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        start_step = ckpt["step"]
        print(f"resumed from {ckpt_path} at step {start_step}")
    (args.out / "args.json").write_text(json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2) + "\n")

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=EpochBatches(len(dataset), args.batch_size, args.seed, start_step),
        num_workers=args.workers, collate_fn=make_collate(config.context_length, tokenizer),
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    # The loss logs every term, weighted or not; texts the data does not have are not encoded.
    needs_paraphrase = all("paraphrase" in r for r in records)
    needs_negation = all("negation" in r for r in records)
    print(f"training {args.model} with --loss {args.loss} on {len(dataset)} triplets "
          f"({steps_per_epoch} steps/epoch) for {args.total_steps} steps on {device}")
    log = (args.out / "metrics.jsonl").open("a")
    model.train()
    batches, last_time, last_step, begin = iter(loader), time.time(), start_step, time.time()
    for step in range(start_step, args.total_steps):
        images, captions, paraphrases, negations = (t.to(device, non_blocking=True) for t in next(batches))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        # Encode all texts of the batch in one pass: one matmul chain instead of three.
        texts = [captions] + [paraphrases] * needs_paraphrase + [negations] * needs_negation
        width = max(t.shape[1] for t in texts)
        text_features = model.encode_text(torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]))
                                                     for t in texts]))
        text, *rest = text_features.split(len(captions))
        paraphrase = rest.pop(0) if needs_paraphrase else None
        negation = rest.pop(0) if needs_negation else None
        terms = loss_fn(model.encode_image(images), text, paraphrase, negation, model.logit_scale.exp())
        if not torch.isfinite(terms["loss"]):
            raise DataError(f"step {step + 1}: loss is {terms['loss'].item()}; lower --lr or check the data "
                            f"(last good checkpoint: {ckpt_path})")
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP: temperature capped at 100
        done = step + 1
        if done % args.log_every == 0 or done == args.total_steps:
            now = time.time()
            rate = (done - last_step) * args.batch_size / (now - last_time)
            eta = (args.total_steps - done) * args.batch_size / rate
            values = {k: round(v.item(), 5) for k, v in terms.items()}
            print(f"step {done}/{args.total_steps} | loss {values['loss']:.4f} (clip {values['contrastive']:.4f} "
                  f"para {values['paraphrase']:.4f} neg {values['negation']:.4f}) | lr {learning_rate(step, args):.2e} "
                  f"| scale {model.logit_scale.exp().item():.1f} | {rate:.0f} img/s | eta {eta:.0f}s", flush=True)
            log.write(json.dumps({"step": done, **values, "lr": learning_rate(step, args),
                                  "logit_scale": model.logit_scale.exp().item(), "images_per_s": rate}) + "\n")
            log.flush()
            last_time, last_step = now, done
        if done % args.save_every == 0 or done == args.total_steps:
            save_checkpoint(ckpt_path, model, loss_fn, optimizer, done, args, tokenizer)
    log.close()
    print(f"trained in {time.time() - begin:.0f}s; checkpoint {ckpt_path}")
    return model.eval(), tokenizer


def main():
    args = parse_args()
    model, tokenizer = train(args)
    if args.data is None:
        n, metrics = evaluate_synth(model, tokenizer, args.synth_dir, args.device)
        print(f"\nsynthetic test split ({n} items), --loss {args.loss}:")
        print(format_table({args.loss: metrics}, list(metrics)))
        print("orig_over_neg: true caption beats its negation; zeroshot_neg: lower is better", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
