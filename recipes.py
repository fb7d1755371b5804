"""Published training recipes as train.py defaults: `python train.py --recipe authors` trains as the
SemCLIP authors' code does, `--recipe conclip` as CoN-CLIP's. A flag given on the command line wins
over the recipe (`--recipe authors --steps 2` runs 2 steps); the run prints what the recipe set.

Each value names its source file in the authors' repository. Only settings that differ from
train.py's defaults are listed (both use gradient clipping at 1.0 and cosine decay to 0, for example).
"""

import argparse

RECIPES = {
    # SemCLIP: github.com/aaai26-paper12649/SemCLIP, src/
    "authors": {
        "epochs": 200,  # args.py --epochs
        # args.py --batch-size 256 per step of the Lightning Trainer, training_params.py
        # gradient_accumulation_steps 2 (train.py accumulate_grad_batches): the loss over 256 at a time
        "batch_size": 512, "accum_steps": 2, "accumulation": "plain",
        "lr": 5e-5,  # args.py --lr
        "weight_decay": 0.2, "decay": "all",  # training_params.py; model.py AdamW(self.parameters())
        "betas": (0.9, 0.999), "adam_eps": 1e-8,  # training_params.py beta1, beta2, eps
        "warmup": 50,  # training_params.py warmup_steps; model.py LinearLR, then CosineAnnealingLR to 0
        "precision": "bf16",  # args.py --precision bf16-mixed (where the GPU has bf16)
        "seed": 42,  # training_params.py random_seed; train.py set_random_seed
        "freeze_vision": True,  # args.py --freeze-vision (default True)
        # model.py: a fresh nn.Parameter(log(1 / temperature)) for the CLIP term, never clamped;
        # training_params.py temperature 0.07
        "temperature": 0.07, "clamp_logit_scale": False,
        "image_transform": "authors",  # dataset.py use_imagenet_transforms=True
    },
    # CoN-CLIP: github.com/jaisidhsingh/CoN-CLIP, src/
    "conclip": {
        "loss": "conclip",  # training_utils/loss_functions.py CustomLossWithNegatives (--negative-images on)
        "epochs": 5, "batch_size": 200, "lr": 1e-6, "warmup": 50,  # training_utils/helpers.py setup_args
        "weight_decay": 0.2, "decay": "all",  # helpers.py; conclip_fine_tuning.py AdamW over every trainable
        "betas": (0.9, 0.999), "adam_eps": 1e-8,  # torch.optim.AdamW's defaults, which they keep
        "grad_clip": 0.0,  # helpers.py --norm-gradient-clip None
        "precision": "bf16",  # helpers.py --precision amp (fp16 autocast); bf16 is the nearest here
        "freeze_vision": True,  # helpers.py --lock-image-encoder on
        "augment": False,  # clip.load's preprocess: resize, centre crop, no augmentation
    },
}


def flags_given(parser: argparse.ArgumentParser, argv) -> set:
    """The settings named on the command line: argparse fills in a default only where the namespace
    has no value yet, so parsing into a namespace pre-filled with a marker leaves the others marked."""
    marker = object()
    unset = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), marker))
    return {name for name, value in vars(parser.parse_args(argv, unset)).items() if value is not marker}


def apply_recipe(args, given: set) -> list:
    """Set `args` to the recipe's values except where `given`; returns one line per setting."""
    def flag(name, value):
        name = name.replace("_", "-")
        if isinstance(value, bool):
            return f"--{name}" if value else f"--no-{name}"
        if value is None:
            return f"--{name} unset"
        return f"--{name} {' '.join(map(str, value)) if isinstance(value, (tuple, list)) else value}"

    lines = []
    for name, value in RECIPES[args.recipe].items():
        if name in given:
            lines.append(f"recipe {args.recipe}: {flag(name, getattr(args, name))} as given "
                         f"(the recipe's: {flag(name, value)})")
        else:
            lines.append(f"recipe {args.recipe}: {flag(name, value)} (ours: {flag(name, getattr(args, name))})")
            setattr(args, name, value)
    if "steps" in given and "epochs" not in given:  # an explicit length wins over the recipe's epochs
        args.epochs = None
        lines.append(f"recipe {args.recipe}: --steps {args.steps} as given, instead of the recipe's epochs")
    return lines
