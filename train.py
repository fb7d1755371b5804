"""Train CLIP / SemCLIP on (caption, paraphrase, negation) triplets, on one process or many.

    python train.py                                   # built-in world: pretrained CLIP -> SemCLIP fine-tune
    python train.py --loss clip --out out/clip        # the paper's baseline: the contrastive-only fine-tune
    python train.py --data triplets.jsonl --model small --steps 20000 --batch-size 256
    torchrun --nproc_per_node=8 train.py --data triplets.jsonl --model B-32 --precision bf16

Reads top to bottom: model, loss and optimizer, the pieces of a step (encode, train_step), data, then
the loop and main (the paper's protocol, pretrain.py). The command line is train_flags.py; the run's
folder (OUT/ckpt.pt, ckpt_step{N}.pt, args.json, metrics.jsonl, results.json) is checkpoint.py.

Many processes (torchrun): --batch-size is the GLOBAL batch. Each process takes its block of it; the
loss (loss.py) gathers every process's features with gradient and computes its own rows against all
columns: W processes train exactly like one on the whole batch (one all-reduce per step).
"""

import os

# set before torch loads OpenMP: its threads then sleep between parallel regions instead of spinning,
# handing those turns to the DataLoader workers that share the cores (on few cores, a faster CPU step);
# a value already in the environment wins
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ctypes  # noqa: E402 (the imports follow the line above on purpose)
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from checkpoint import claim_run_folder, json_args, save_checkpoint
from data import EpochBatches, TripletDataset, make_collate, read_triplets
from distributed import RankShard, average_gradients, average_over_processes, setup_distributed
from errors import DataError, one_line, run_cli
from eval import evaluate_synth, format_table, write_results
from loss import LOSS_VARIANTS, SemCLIPLoss
from model import CLIP, ModelConfig, describe_loaded, load_checkpoint, load_resume_checkpoint
from overlap import fingerprint
from pretrain import PRETRAIN_SEED, fine_tunes_pretrained, pretrained_checkpoint
from synth import checked_world, world_dir, write_missing_worlds
from train_flags import WEIGHT_DEFAULTS, parse_args


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights were not updated with it."""


# ----------------------------------------------------------------------------- model, loss, optimizer


def build_model(args, device):
    """(model, tokenizer, checkpoint to resume from or None): from OUT/ckpt.pt with --resume (or, if it
    does not load, the newest kept step file that does), from --init, else a fresh --model preset."""
    if args.resume:
        model, ckpt, warning = load_resume_checkpoint(args.out, args.activation)
        if warning and int(os.environ.get("RANK", "0")) == 0:
            print(warning, file=sys.stderr)
        return model.to(device), ckpt["tokenizer"], ckpt
    if args.init is None:
        return CLIP(ModelConfig.preset(args.model)).to(device), "cl100k_base", None
    model, ckpt = load_checkpoint(args.init, activation=args.activation)
    if int(os.environ.get("RANK", "0")) == 0:
        print(describe_loaded(args.init, model.config, ckpt, args.activation))
    return model.to(device), ckpt["tokenizer"], None


def build_loss(args, embed_dim: int) -> SemCLIPLoss:
    """The loss with the weights parse_args settled (flags given, else the --loss preset's) and the
    preset's other settings (hard negatives, the contrastive form)."""
    variant = {name: value for name, value in LOSS_VARIANTS[args.loss].items() if name not in WEIGHT_DEFAULTS}
    weights = {name: getattr(args, name) for name in WEIGHT_DEFAULTS}
    return SemCLIPLoss(embed_dim, contrastive_weight=args.contrastive_weight, **weights, **variant,
                       num_paraphrase_projections=args.paraphrase_projections or None,
                       num_projections=args.num_projections, learnable_projections=args.learnable_projections,
                       normalize_projections=not args.no_normalize_projections, seed=args.seed,
                       contrastive_impl=args.contrastive_impl)


def trainable_parameters(model, loss_fn):
    """The model's and the loss's (learnable basis, SigLIP bias) parameters that train."""
    return [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]


def build_optimizer(args, model, loss_fn):
    """AdamW; with --decay matrices, no weight decay on gains, biases, embeddings-as-vectors and
    logit_scale (ndim < 2); with --decay all, on every parameter, as the authors' and CoN-CLIP's code.

    fused=True: one kernel over all parameters instead of a dozen passes (foreach); the same
    update, and on CPU 10-40x faster, which matters with a 100k-token embedding table."""
    params = trainable_parameters(model, loss_fn)
    def decays(p):
        return args.decay == "all" or p.ndim >= 2
    groups = [{"params": [p for p in params if decays(p)], "weight_decay": args.weight_decay},
              {"params": [p for p in params if not decays(p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps, fused=True)


def learning_rate(step: int, total_steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to the peak, then cosine decay to zero at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- one step


def encode(forward, images, captions, *fields, autocast=nullcontext()):
    """[image, caption, *fields] embeddings in fp32; each field is tokens [n, L] (a text), images
    [n, 3, S, S] (CoN-CLIP's distractors) or None (not given, embedding None).

    All texts go through the text tower in one pass, all images through the image tower in one:
    one matmul chain each instead of several.
    """
    texts = [t for t in (captions, *fields) if t is not None and t.ndim == 2]
    pictures = [images] + [t for t in fields if t is not None and t.ndim == 4]
    width = max(t.shape[1] for t in texts)
    with autocast:
        image, text, _ = forward(torch.cat(pictures), torch.cat([F.pad(t, (0, width - t.shape[1])) for t in texts]))
    image, text = iter(image.float().split(len(images))), iter(text.float().split(len(captions)))
    return [next(image)] + [None if t is None else next(text if t.ndim == 2 else image) for t in (captions, *fields)]


def loss_of(loss_fn, embeddings, logit_scale):
    """loss_fn on encode's embeddings: image, caption and texts in order, image fields by name."""
    image, caption, paraphrase, negation, *named = embeddings
    return loss_fn(image, caption, paraphrase, negation, logit_scale, **dict(zip(loss_fn.FIELDS[2:], named)))


def split_batch(batch, accum_steps):
    """The K micro-batches of a batch (images, captions, *fields), None fields kept as None."""
    return list(zip(*(t.chunk(accum_steps) if t is not None else [None] * accum_steps for t in batch)))


def cached_gradient_step(forward, logit_scale, loss_fn, batch, accum_steps, autocast):
    """The loss over the whole batch with the activation memory of one micro-batch: gradient
    caching (GradCache, Gao et al. 2021; open_clip's --accum-freq).

    Plain gradient accumulation would give each micro-batch only its own b - 1 negatives, a
    different and weaker loss. Instead: (1) embed all K micro-batches without a graph, (2) compute
    the loss over the whole batch on those cached embeddings and backpropagate it to them (and to
    the logit scale and the loss's own parameters, once), (3) re-embed each micro-batch with a
    graph and backpropagate its slice of the cached embedding gradients. Same loss and gradients
    as one batch of K x b; one extra forward pass.
    """
    micro_batches = split_batch(batch, accum_steps)
    # (1) embeddings of every micro-batch, no graph
    with torch.no_grad():
        cached = [encode(forward, *micro, autocast=autocast) for micro in micro_batches]
    # (2) the loss over the whole batch, backpropagated to the cached embeddings
    features = [None if parts[0] is None else torch.cat(parts).requires_grad_() for parts in zip(*cached)]
    terms = loss_of(loss_fn, features, logit_scale.exp())
    terms["loss"].backward()
    # (3) each micro-batch again, with a graph, backpropagating its slice of those gradients
    for k, micro in enumerate(micro_batches):
        embeddings, gradients = [], []
        for embedding, cache in zip(encode(forward, *micro, autocast=autocast), features):
            if embedding is not None and embedding.requires_grad and cache.grad is not None:
                embeddings.append(embedding)
                gradients.append(cache.grad.chunk(accum_steps)[k])
        torch.autograd.backward(embeddings, gradients)
    return terms


def accumulated_gradient_step(forward, logit_scale, loss_fn, batch, accum_steps, autocast):
    """Plain gradient accumulation, as the authors' code (Lightning's accumulate_grad_batches): each
    micro-batch gets its own loss, with only its own b - 1 negatives, backpropagated divided by K.
    Offered to reproduce their runs; the terms returned are the means over the micro-batches."""
    terms = {}
    for micro in split_batch(batch, accum_steps):
        micro_terms = loss_of(loss_fn, encode(forward, *micro, autocast=autocast), logit_scale.exp())
        # L = 1/K sum_k L_k, each micro-batch's share backpropagated at once
        (micro_terms["loss"] / accum_steps).backward()
        for name, value in micro_terms.items():
            terms[name] = terms.get(name, 0) + value.detach() / accum_steps
    return terms


def train_step(forward, logit_scale, loss_fn, batch, accum_steps=1, autocast=nullcontext(), accumulation="cached"):
    """Forward and backward of this process's share of one global batch; returns the loss terms.

    batch = (images, captions, *fields): one tensor (or None) per loss_fn.FIELDS (encode).
    accumulation: "cached" (the loss over the whole batch) or "plain" (per micro-batch).
    """
    if accum_steps == 1:
        terms = loss_of(loss_fn, encode(forward, *batch, autocast=autocast), logit_scale.exp())
        terms["loss"].backward()
    elif accumulation == "plain":
        terms = accumulated_gradient_step(forward, logit_scale, loss_fn, batch, accum_steps, autocast)
    else:
        terms = cached_gradient_step(forward, logit_scale, loss_fn, batch, accum_steps, autocast)
    return {name: value.detach() for name, value in terms.items()}


# ----------------------------------------------------------------------------- checkpoints and data


def resolve_data(args, rank: int):
    """The training file; with no --data, the synthetic world (written first by rank 0, once)."""
    if args.data is not None:
        return args.data
    if rank == 0:
        write_missing_worlds(args.synth_dir, **world_variant(args))
    if dist.is_initialized():
        dist.barrier()
    return checked_world(args.synth_dir, **world_variant(args)) / "train.jsonl"


def world_variant(args) -> dict:
    """Which of the built-in worlds the flags choose (synth.world_dir)."""
    return {"true_negations": args.true_negations, "negation_heldout": args.negation_heldout,
            "reword_negations": args.reword_negations}


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """What a run is settled on before its first step."""
    rank: int
    world_size: int
    device: torch.device
    model: CLIP
    tokenizer: str
    loss_fn: SemCLIPLoss
    dataset: TripletDataset
    total_steps: int
    data_path: Path  # the training file
    train_fingerprint: dict  # overlap.fingerprint of the training records
    resume_from: dict = None  # the checkpoint of --resume


def prepare(args) -> Run:
    """Processes, model, loss, data (checked for the texts the loss needs) and the step count."""
    rank, world_size, device = setup_distributed(args)
    torch.manual_seed(args.seed)
    model, tokenizer, ckpt = build_model(args, device)
    if args.image_transform:  # the preprocessing these weights will expect, recorded with them
        model.config = replace(model.config, image_transform=args.image_transform)
    args.image_transform = model.config.image_transform
    if args.temperature is not None and ckpt is None:  # a fresh logit scale s = 1/T (resuming keeps the trained one)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / args.temperature))
    loss_fn = build_loss(args, model.config.embed_dim).to(device)
    data_path = resolve_data(args, rank)
    records = read_triplets(data_path, required=loss_fn.texts)
    # every text a term reads is loaded if the data has it (train_step encodes only the weighted terms'; the
    # others are measured on logging steps); images only where the loss needs them (TripletDataset.distractor)
    fields = ("caption",) + tuple(f for f in loss_fn.logged_texts if all(f in r for r in records)) + loss_fn.images
    dataset = TripletDataset(records, model.config.image_size, train=args.augment, fields=fields,
                             kind=model.config.image_transform, caption_augment=args.caption_augment)
    steps_per_epoch = len(dataset) // args.batch_size
    total_steps = max(1, round(args.epochs * steps_per_epoch)) if args.epochs else args.steps
    return Run(rank, world_size, device, model, tokenizer, loss_fn, dataset, total_steps, data_path,
               fingerprint(records), ckpt)


def as_batch(tensors, fields, loss_fields, device, keep):
    """(images, captions, *values) with one entry per loss field: None where the data has none or the
    field is not in `keep`."""
    by_field = dict(zip(fields, tensors[1:]))
    return (tensors[0].to(device, non_blocking=True), by_field["caption"].to(device, non_blocking=True),
            *(by_field[f].to(device, non_blocking=True) if f in by_field and f in keep else None for f in loss_fields))


def unweighted_terms(forward, logit_scale, loss_fn, batch, autocast):
    """The weight-0 terms (what SemCLIP's terms read in a baseline), measured without a graph: only on
    logging steps, so a baseline trains at its own speed and its log keeps every term's meaning."""
    with torch.no_grad():
        terms = loss_of(loss_fn, encode(forward, *batch, autocast=autocast), logit_scale.exp())
    return {name: value for name, value in terms.items() if loss_fn.weights.get(name) == 0}


def train(args, run: Run):
    """Train per `args` and `run`; returns the model (None on ranks other than 0)."""
    model, loss_fn, dataset, device, total_steps = run.model, run.loss_fn, run.dataset, run.device, run.total_steps
    if args.freeze_vision:
        model.visual.requires_grad_(False)
    if args.freeze_text_embeddings:  # also spares the optimizer the 100k-token table
        model.token_embedding.requires_grad_(False)
        model.positional_embedding.requires_grad_(False)
    optimizer = build_optimizer(args, model, loss_fn)
    start_step = 0
    if run.resume_from is not None:
        loss_fn.load_state_dict(run.resume_from["loss"])
        optimizer.load_state_dict(run.resume_from["optimizer"])
        torch.set_rng_state(run.resume_from["rng"]["torch"])
        if device.type == "cuda" and run.resume_from["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(run.resume_from["rng"]["cuda"])
        start_step = run.resume_from["step"]
    if run.world_size > 1:  # every process starts from rank 0's weights (same seed gives the same, but be sure)
        for tensor in list(model.state_dict().values()) + list(loss_fn.state_dict().values()):
            dist.broadcast(tensor, 0)
    is_main = run.rank == 0
    if is_main:
        if run.resume_from is None:
            claim_run_folder(args.out, args.overwrite)
        args.out.mkdir(parents=True, exist_ok=True)
        if run.resume_from is not None:
            print(f"resumed from {args.out} at step {start_step}")
        (args.out / "args.json").write_text(json.dumps(json_args(args), indent=2) + "\n")

    batches = EpochBatches(len(dataset), args.batch_size, args.seed, start_step)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=RankShard(batches, run.rank, run.world_size), num_workers=args.workers,
        collate_fn=make_collate(model.config.context_length, run.tokenizer),
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    forward = torch.compile(model) if args.compile else model
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext())
    params = trainable_parameters(model, loss_fn)
    if is_main:
        micro_batch = args.batch_size // run.world_size // args.accum_steps
        print(f"training {'--init ' + str(args.init) if args.init else args.model} with --loss {args.loss} on "
              f"{len(dataset)} triplets ({len(dataset) // args.batch_size} steps/epoch) for {total_steps} steps on "
              f"{run.world_size} x {device}, {args.precision}, batch {args.batch_size} ({micro_batch} per micro-batch)")
        log = (args.out / "metrics.jsonl").open("a")
    model.train()
    batches, last_time, last_step, begin = iter(loader), time.time(), start_step, time.time()
    for step in range(start_step, total_steps):
        try:
            tensors = next(batches)
        except DataError as error:  # an image that does not decode: there may be more
            raise DataError(f"{one_line(error)}; `python data.py check {run.data_path}` lists every "
                            "bad image") from None
        batch = as_batch(tensors, dataset.fields, loss_fn.FIELDS, device, keep=loss_fn.texts + loss_fn.images)
        lr = learning_rate(step, total_steps, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        terms = train_step(forward, model.logit_scale, loss_fn, batch, args.accum_steps, autocast, args.accumulation)
        done = step + 1
        logging = done % args.log_every == 0 or done == total_steps  # the same steps on every process
        if logging and any(weight == 0 for weight in loss_fn.weights.values()):
            full = as_batch(tensors, dataset.fields, loss_fn.FIELDS, device, keep=loss_fn.FIELDS)
            terms.update(unweighted_terms(forward, model.logit_scale, loss_fn, full, autocast))
        # every term the loss returns, as the global-batch mean
        stacked = torch.stack([t.float() for t in terms.values()])
        values = dict(zip(terms, average_over_processes(stacked, run.world_size).tolist()))
        if not math.isfinite(values["loss"]):
            raise TrainingDiverged(f"step {step + 1}: the loss is {values['loss']}; stopped before updating the "
                                   f"weights. Lower --lr or raise --warmup; the last good checkpoint is "
                                   f"{args.out / 'ckpt.pt'}")
        average_gradients(params, run.world_size)
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        optimizer.step()
        if args.clamp_logit_scale:
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))  # CLIP: temperature capped at 100
        if is_main and logging:
            now = time.time()
            rate = (done - last_step) * args.batch_size / (now - last_time)
            eta = (total_steps - done) * args.batch_size / rate
            scale = model.logit_scale.exp().item()
            parts = " ".join(f"{name} {value:.4f}" for name, value in values.items() if name != "loss")
            print(f"step {done}/{total_steps} | loss {values['loss']:.4f} ({parts}) | lr {lr:.2e} | "
                  f"scale {scale:.1f} | {rate:.0f} img/s | eta {eta:.0f}s", flush=True)
            record = {"step": done, **{k: round(v, 5) for k, v in values.items()},
                      "lr": lr, "logit_scale": scale, "images_per_s": rate}
            # a term the data has no texts for is NaN; JSON has no NaN, so it is written as null
            log.write(json.dumps({k: v if math.isfinite(v) else None for k, v in record.items()}) + "\n")
            log.flush()
            last_time, last_step = now, done
        if is_main and (done % args.save_every == 0 or done == total_steps):
            save_checkpoint(args.out, args.keep, model, loss_fn, optimizer, done, args, run.tokenizer,
                            run.train_fingerprint)
    if run.world_size > 1:
        dist.destroy_process_group()
    if not is_main:
        return None
    log.close()
    print(f"trained in {time.time() - begin:.0f}s; checkpoint {args.out / 'ckpt.pt'}")
    return model.eval()


def train_command(argv):
    """Run train.py's training for `argv` in this process (no evaluation): the pretraining stage."""
    args = parse_args(argv)
    return train(args, prepare(args))


def pretrained_metrics(checkpoint: Path, world: Path, tokenizer, device) -> dict:
    """The pretrained CLIP's synthetic metrics on `world`'s test split, evaluated once per world and kept
    beside the checkpoint (every fine-tune of it shows them)."""
    kept = checkpoint.parent / f"results.{world.name}.json"
    if kept.is_file():
        return json.loads(kept.read_text())["metrics"]
    n, metrics = evaluate_synth(load_checkpoint(checkpoint)[0].to(device).eval(), tokenizer, world, device)
    write_results(kept, "synth", checkpoint, n, metrics, seed=PRETRAIN_SEED)
    return metrics


def keep_freed_memory():
    """Keep freed memory in the process instead of handing it back to the OS: glibc returns every freed
    block over 32 MB (the 100k-token table's gradient, 38 MB) and trims the heap's top, so each CPU step
    page-faults and zeroes its largest tensors anew, a cost as large as some of its layers. The
    arithmetic is untouched: the same weights, bit for bit. No-op without glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    mmap_threshold, trim_threshold = -3, -1  # glibc's malloc.h M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    libc.mallopt(mmap_threshold, 256 << 20)
    libc.mallopt(trim_threshold, 1 << 30)


def main():
    begin = time.time()
    keep_freed_memory()
    args = parse_args()
    pretrained = None
    if fine_tunes_pretrained(args):  # the paper's protocol: fine-tune a CLIP pretrained once on the web split
        args.init = pretrained = pretrained_checkpoint(args, train_command, int(os.environ.get("WORLD_SIZE", "1")))
    run = prepare(args)
    training_began = time.time()
    model = train(args, run)
    if model is None or args.data is not None:
        return
    timing = {"train_s": round(time.time() - training_began, 1)}
    world = world_dir(args.synth_dir, **world_variant(args))
    n, metrics = evaluate_synth(model, run.tokenizer, world, args.device)
    rows, extra = {f"--loss {args.loss}": metrics}, {}
    if pretrained is not None:
        before = pretrained_metrics(pretrained, world, run.tokenizer, args.device)
        rows, extra = {"pretrained": before, **rows}, {"pretrained": {"checkpoint": str(pretrained), "metrics": before}}
    timing["wall_s"] = round(time.time() - begin, 1)  # the whole command: world, pretraining, evaluations
    write_results(args.out / "results.json", "synth", args.out / "ckpt.pt", n, metrics, seed=args.seed, **timing,
                  **extra)
    print(f"\nsynthetic test split ({n} items):")
    print(format_table(rows, list(metrics)))
    print("orig_over_neg: true caption beats its negation; zeroshot_neg: lower is better", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main, failures=(DataError, TrainingDiverged))
