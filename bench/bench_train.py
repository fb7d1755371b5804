"""Images/s of one full training step, ours vs open_clip at identical sizes, side by side.

One step = forward of both towers, contrastive loss, backward, AdamW update, on a batch of
random images and random texts padded to the context length (the same tensors for all).

  ours       model.CLIP + loss.SemCLIPLoss with --loss clip settings (the fused contrastive op),
             through train.train_step, the function train.py runs
  open_clip  open_clip.model.CLIP built with the same widths, layers, heads, patch, image size,
             context, vocabulary (100277) and GELU, + open_clip.loss.ClipLoss
             (pip install -r bench/requirements.txt; its columns are skipped with a note if it is absent)
  open_clip+fused  the same open_clip step with train.py's optimizer: shows where the gap comes from
  semclip    ours with the full SemCLIP loss: three texts per image (for information; more work)

Each of ours is handed its batch as train.py builds it (train.as_batch, keep=loss_fn.texts +
loss_fn.images): ours encodes the captions alone, semclip captions, paraphrases and negations.

All use AdamW with the same parameter groups and hyper-parameters, no gradient clipping. Ours
runs train.build_optimizer as train.py does (fused=True, one kernel); open_clip runs AdamW as
its training script builds it (torch's default, foreach); open_clip+fused isolates the model
and loss from the optimizer. Runs are interleaved: repeat r times every method once before repeat r+1, so a slow
moment of a shared machine hits all alike; each run times --steps steps after --warmup steps,
and the table shows the median over repeats. On CUDA, bf16 autocast (loss in fp32) is the default
and peak memory is reported too: torch.cuda.max_memory_allocated over the timed steps, minus
what the other methods' models and optimizers hold (so: what this method alone needs).

--out FILE writes one preset's numbers as a results file (results.py renders the docs' tables from
it): {"bench": "bench_train", "checkpoint": null, "n": the batch size, "metrics": {"M_img_s" per
method M, "ours/M" (ours' img/s over M's), "M_GiB" on CUDA}, "provenance"}.

    python bench/bench_train.py                                   # CPU: tiny and small, fp32
    python bench/bench_train.py --presets tiny --out results/training-at-scale/bench_train_tiny.json
    python bench/bench_train.py --device cuda --presets B-32 --batch-size 256
"""

import argparse
import importlib.util
import io
import os
import statistics
import sys
import time
from contextlib import nullcontext, redirect_stdout
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402
from model import CLIP, ModelConfig  # noqa: E402
from results import write_bench_results  # noqa: E402

END_OF_TEXT = 100257  # cl100k_base; the largest id in a caption, where both models pool
FIELDS = ("caption", "paraphrase", "negation")  # random_batch's texts, as train.py's dataset names them


def parse_args():
    parser = argparse.ArgumentParser(
        description="Training-step throughput (images/s), ours vs open_clip's CLIP + ClipLoss at identical sizes.",
        epilog="examples:\n  python bench/bench_train.py\n"
               "  python bench/bench_train.py --presets tiny --repeats 3\n"
               "  python bench/bench_train.py --device cuda --presets B-32 --batch-size 256",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=None,
                        help="model presets (default: tiny small on CPU, tiny small B-32 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved runs per method (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"),
                        help="(default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--out", type=Path, help="write the results JSON of one preset (--presets NAME) to this file")
    args = parser.parse_args()
    args.presets = args.presets or (["tiny", "small", "B-32"] if args.device.startswith("cuda") else ["tiny", "small"])
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    for name in args.presets:
        try:
            ModelConfig.preset(name)
        except ValueError as error:
            parser.error(str(error))
    if min(args.batch_size, args.repeats, args.steps) < 1:
        parser.error("--batch-size, --repeats and --steps must be at least 1")
    if args.out and len(args.presets) != 1:
        parser.error("--out writes one preset's results file: give one --presets NAME")
    return args


def random_batch(config, n, device, generator):
    """Images, and texts (one per FIELDS) of 4..L-1 random tokens then end-of-text, zero-padded to the context."""
    images = torch.randn(n, 3, config.image_size, config.image_size, generator=generator)
    length = config.context_length
    tokens = torch.randint(1, END_OF_TEXT, (3 * n, length), generator=generator)
    ends = torch.randint(4, length, (3 * n, 1), generator=generator)
    positions = torch.arange(length)
    tokens = torch.where(positions < ends, tokens, 0).scatter_(1, ends, END_OF_TEXT)
    return [t.to(device) for t in (images, *tokens.chunk(3))]


def open_clip_model(config):
    from open_clip.model import CLIP as OpenCLIP, CLIPTextCfg, CLIPVisionCfg
    vision = CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width,
                           head_width=config.vision_width // config.vision_heads, patch_size=config.patch_size,
                           image_size=config.image_size)
    text = CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size, width=config.text_width,
                       heads=config.text_heads, layers=config.text_layers)
    return OpenCLIP(config.embed_dim, vision, text, quick_gelu=False)


def train_settings(*flags):
    """train.py's settings for these flags, from scratch (its lines about a training run not printed)."""
    with redirect_stdout(io.StringIO()):
        return train.parse_args(["--from-scratch", *flags])


def make_step(method, config, batch, device, autocast):
    """A function running one training step of `method` on `batch`."""
    optimizer_args = train_settings("--lr", "1e-4", "--weight-decay", "0.1")  # train.py's AdamW settings
    images, captions = batch[:2]
    if method.startswith("open_clip"):
        from open_clip.loss import ClipLoss
        model, clip_loss = open_clip_model(config).to(device), ClipLoss()
        optimizer = train.build_optimizer(optimizer_args, model, torch.nn.Module())
        if method == "open_clip":  # open_clip's training script: torch's default AdamW (foreach)
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.98), eps=1e-6)

        def forward_backward():
            with autocast:
                image, text, scale = model(images, captions)
            clip_loss(image.float(), text.float(), scale).backward()
    else:
        model = CLIP(config).to(device)
        loss = "clip" if method == "ours" else "semclip"
        loss_fn = train.build_loss(train_settings("--loss", loss), config.embed_dim).to(device)
        optimizer = train.build_optimizer(optimizer_args, model, loss_fn)
        ours = train.as_batch(batch, FIELDS, loss_fn.FIELDS, device, keep=loss_fn.texts + loss_fn.images)

        def forward_backward():
            train.train_step(model, model.logit_scale, loss_fn, ours, 1, autocast)

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # between steps: weights and optimizer state only

    def resting_bytes():
        """Weights and optimizer state: what this method holds between steps."""
        tensors = list(model.parameters()) + [t for state in optimizer.state.values() for t in state.values()]
        return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))

    model.train()
    return step, resting_bytes


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    args = parse_args()
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    methods = ("ours", "open_clip", "open_clip+fused", "semclip")
    if importlib.util.find_spec("open_clip") is None:  # e.g. a GPU machine without internet
        methods = ("ours", "semclip")
        print("note: open_clip is not installed (pip install -r bench/requirements.txt); its columns are skipped")
    print(f"device {device} ({torch.get_num_threads()} threads), {args.precision}, batch {args.batch_size}, "
          f"torch {torch.__version__}; median of {args.repeats} interleaved runs of {args.steps} steps")
    rows = []
    for preset in args.presets:
        config = ModelConfig.preset(preset)
        print(f"{preset}: image {config.image_size}, patch {config.patch_size}, vision width {config.vision_width} "
              f"x {config.vision_layers} layers, text width {config.text_width} x {config.text_layers} layers, "
              f"context {config.context_length}, vocabulary {config.vocab_size}, embed {config.embed_dim}", flush=True)
        batch = random_batch(config, args.batch_size, device, torch.Generator().manual_seed(0))
        steps, resting, rates, peaks = {}, {}, {m: [] for m in methods}, {m: [] for m in methods}
        for method in methods:
            torch.manual_seed(0)
            steps[method], resting[method] = make_step(method, config, batch, device, autocast)
            for _ in range(args.warmup):
                steps[method]()
        for _ in range(args.repeats):
            for method in methods:
                synchronize(device)
                if device.type == "cuda":  # all methods' models live on the device: count only this one's
                    torch.cuda.reset_peak_memory_stats(device)
                    others = torch.cuda.memory_allocated(device) - resting[method]()
                start = time.perf_counter()
                for _ in range(args.steps):
                    steps[method]()
                synchronize(device)
                rates[method].append(args.steps * args.batch_size / (time.perf_counter() - start))
                if device.type == "cuda":
                    peaks[method].append((torch.cuda.max_memory_allocated(device) - others) / 2 ** 30)
        median = {m: statistics.median(rates[m]) for m in methods}
        metrics = {f"{m}_img_s": median[m] for m in methods}
        metrics.update({f"ours/{m}": median["ours"] / median[m] for m in methods if m != "ours"})
        metrics.update({f"{m}_GiB": max(peaks[m]) for m in methods if peaks[m]})
        rows.append((preset, metrics))
        del steps, resting
    print("| preset | " + " | ".join(rows[0][1]) + " |\n|" + "---|" * (1 + len(rows[0][1])))
    for preset, metrics in rows:
        print(f"| {preset} | " + " | ".join(f"{value:.2f}" for value in metrics.values()) + " |")
    if args.out:
        write_bench_results(args.out, "bench_train", args.batch_size, rows[0][1], seed=0)


if __name__ == "__main__":
    main()
