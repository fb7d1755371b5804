"""A training run's folder: what it holds, how it is written, and what a second command may do to it.

    OUT/ckpt.pt            the latest checkpoint (a hard link to the newest step file)
    OUT/ckpt_step{N}.pt    the last --keep checkpoints
    OUT/args.json          the effective settings of the run (presets resolved, flags given)
    OUT/metrics.jsonl      one line per logged step
    OUT/results.json       the synthetic evaluation, where train.py ran one

One folder holds one run. A fresh run into a folder that holds another refuses (continue it with
--resume, replace it with --overwrite); --resume takes the run's own settings, and a flag that
would change what the run is (its data, model, loss, batch, ...) refuses rather than switching
mid-run: a log that mixes two runs, or a resume that trains another model than it says, would be
numbers nobody can reproduce.
"""

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from errors import DataError

PATH_SETTINGS = ("data", "synth_dir", "init")
RUN_FILES = ("ckpt.pt", "args.json", "metrics.jsonl", "results.json")
# settings that make a run what it is: --resume may not change them
RUN_IDENTITY = ("data", "synth_dir", "true_negations", "negation_heldout", "reword_negations", "from_scratch",
                "model", "init", "loss", "contrastive_weight", "paraphrase_weight", "negation_weight", "truth_weight",
                "num_projections", "paraphrase_projections", "learnable_projections", "no_normalize_projections",
                "caption_augment", "image_transform", "freeze_vision", "freeze_text_embeddings", "batch_size", "seed")


def save_checkpoint(out: Path, keep: int, model, loss_fn, optimizer, step, args, tokenizer, train_fingerprint):
    """OUT/ckpt_step{N}.pt, then OUT/ckpt.pt pointing at it, each appearing by an atomic rename
    (a crash never leaves half a checkpoint); older ckpt_step files beyond --keep are deleted.
    `train_fingerprint` (overlap.py) lets eval.py count test items the model trained on."""
    state = {
        "model_config": asdict(model.config), "tokenizer": tokenizer, "model": model.state_dict(),
        "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "args": json_args(args), "train_fingerprint": train_fingerprint,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    path, temporary = out / f"ckpt_step{step}.pt", out / "ckpt.pt.tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)
    try:
        os.link(path, temporary)  # no second copy on disk
    except OSError:
        shutil.copyfile(path, temporary)
    os.replace(temporary, out / "ckpt.pt")
    for old in step_files(out)[:-keep]:
        old.unlink()


def step_files(out: Path) -> list:
    """OUT/ckpt_step{N}.pt, oldest first."""
    kept = (p for p in Path(out).glob("ckpt_step*.pt") if p.stem.removeprefix("ckpt_step").isdecimal())
    return sorted(kept, key=lambda p: int(p.stem.removeprefix("ckpt_step")))


def json_args(args) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def run_files(out: Path) -> list:
    """The files of a run that `out` holds (none: the folder is free for a new run)."""
    return [p for p in [*(Path(out) / name for name in RUN_FILES), *step_files(out)] if p.is_file()]


def free_run_folder(out: Path, default: bool) -> Path:
    """The folder a fresh run writes to: `out` when it holds no run; for the default --out, the
    first free `out-2`, `out-3`, ... (so the README's commands stay re-runnable as they are)."""
    if not run_files(out) or not default:
        return out
    number = 2
    while run_files(out.with_name(f"{out.name}-{number}")):
        number += 1
    return out.with_name(f"{out.name}-{number}")


def claim_run_folder(out: Path, overwrite: bool):
    """Refuse (one line) to start a fresh run in a folder that holds another; with --overwrite,
    remove that run's files first (nothing else in the folder is touched)."""
    held = run_files(out)
    if held and not overwrite:
        raise DataError(f"{out} already holds a run ({', '.join(p.name for p in held[:3])}); continue it with "
                        "--resume, replace it with --overwrite, or pick another --out")
    for path in held:
        path.unlink()


def recorded_args(out: Path) -> dict:
    """The settings a run recorded: OUT/args.json, else those inside OUT/ckpt.pt (a copied checkpoint),
    else none (model.load_resume_checkpoint then says what is wrong with the folder)."""
    path = out / "args.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: unreadable ({type(error).__name__}); the run cannot be resumed exactly") from None
    try:
        return torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True).get("args", {})
    except Exception:  # noqa: BLE001 -- missing or damaged: load_resume_checkpoint reports it, or falls back
        return {}


def settle_resume(args, given: set) -> list:
    """--resume: take the run's own settings (OUT/args.json) for every flag not given; refuse a given
    flag that changes what the run is. Returns (one line per other setting the command changes, the
    names of the settings the run recorded)."""
    stored = recorded_args(args.out)
    changes = []
    for name, value in stored.items():
        if not hasattr(args, name) or name in ("resume", "out", "overwrite"):
            continue
        current = json_args(args)[name]
        if name not in given or current == value or (isinstance(value, list) and tuple(value) == tuple(current)):
            setattr(args, name, Path(value) if name in PATH_SETTINGS and value is not None else value)
            continue
        flag = f"--{name.replace('_', '-')}"
        if name in RUN_IDENTITY:
            raise DataError(f"--resume: {args.out} is a run with {flag} {value}; {flag} {current} would make it "
                            "another run; drop the flag, or start a new run with another --out")
        changes.append(f"--resume: {flag} {current} (the run had {value})")
    return changes, set(stored)
