"""The paper's protocol in miniature: a CLIP pretrained once, then fine-tuned with its image tower frozen.

SemCLIP is a fine-tuning method: the authors load open_clip's ViT-B-32 (pretrained on LAION),
lock its image tower and train the text tower on their triplets; their baseline is the same
fine-tune with the contrastive loss alone. The miniature does the same:

  1. "web" pretraining, once: `--loss clip` from random weights on the paper's world's web split,
     10,000 images with captions only (half carry negation words that say nothing about the
     picture, as alt-text does). The web split shares no image with the triplets, as the paper's
     CLIP never saw its COCO triplets. Written to data/synth-pretrained-<model>/ beside the world
     and reused by every later run, like the world itself.
  2. the fine-tune: the chosen `--loss` on the triplets from those weights, the image tower frozen.

`python train.py --from-scratch` trains from random weights instead (no pretraining);
`--init PATH` fine-tunes any other checkpoint; `--data` trains on a user's file as given.
"""

from pathlib import Path

from errors import DataError
from synth import write_missing_worlds

PRETRAIN_SEED, PRETRAIN_STEPS = 0, 600  # train.py --pretrain-steps: another count is another model
# what each protocol sets where no flag is given (flags given win; train.py prints the result)
FINE_TUNE = {"steps": 200, "lr": 3e-4, "warmup": 20, "freeze_vision": True}
FROM_SCRATCH = {"steps": 600, "lr": 1e-3, "warmup": 40, "freeze_vision": False}


def pretrained_dir(synth_dir, model: str, steps: int = PRETRAIN_STEPS) -> Path:
    """Where the world's pretrained CLIP of preset `model` lives: beside the world."""
    suffix = "" if steps == PRETRAIN_STEPS else f"-{steps}steps"
    return Path(synth_dir).with_name(f"{Path(synth_dir).name}-pretrained-{model}{suffix}")


def fine_tunes_pretrained(args) -> bool:
    """Does this run follow the paper's protocol on the built-in world (pretrained CLIP -> fine-tune)?"""
    return args.data is None and args.init is None and not args.from_scratch


def pretraining_argv(args, out: Path) -> list:
    """train.py's flags for the web stage: the same model, device and workers as the run."""
    return ["--from-scratch", "--loss", "clip", "--data", str(Path(args.synth_dir) / "web.jsonl"),
            "--model", args.model, "--seed", str(PRETRAIN_SEED), "--steps", str(args.pretrain_steps),
            "--out", str(out), "--device", str(args.device), "--workers", str(args.workers)]


def pretrained_checkpoint(args, train_fn, world_size: int = 1) -> Path:
    """The pretrained CLIP's checkpoint, made first if missing: train_fn(argv) runs train.py's
    training in this process into a temporary folder, renamed into place when complete (a run cut
    short never leaves a half-made model to be reused)."""
    final = pretrained_dir(args.synth_dir, args.model, args.pretrain_steps)
    if (final / "ckpt.pt").is_file():
        return final / "ckpt.pt"
    if world_size > 1:
        raise DataError(f"{final}: the pretrained CLIP is missing; make it once on one process (`python train.py "
                        f"--model {args.model} --steps 1`), or pass --init PATH or --from-scratch")
    write_missing_worlds(args.synth_dir)  # the paper's world, with its web split
    if not (Path(args.synth_dir) / "web.jsonl").is_file():
        raise DataError(f"{args.synth_dir}: this world has no web split to pretrain on (written with --n-web 0); "
                        "delete the folder to rewrite it, or pass --from-scratch or --init PATH")
    temporary = final.with_name(final.name + ".tmp")
    for leftover in temporary.glob("*"):
        leftover.unlink()
    print(f"pretraining CLIP on {args.synth_dir}'s web split, once ({args.pretrain_steps} steps; "
          f"every later run reuses {final})")
    train_fn(pretraining_argv(args, temporary))
    temporary.rename(final)
    return final / "ckpt.pt"
