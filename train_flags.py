"""train.py's command line: every flag with its checks, and how presets and given flags settle into the
run's effective settings.

Presets only set defaults; a flag given on the command line always wins, and the result is printed at
start and recorded in OUT/args.json. In order: the protocol's defaults (pretrain.py: fine-tuning the
built-in pretrained CLIP, or any other run), then --recipe's (recipes.py), then the --loss preset's
weights (loss.LOSS_VARIANTS). --resume instead takes the run's own settings (checkpoint.settle_resume).
Every number is checked as it is parsed (errors.number): a bad value is argparse's usage line, exit 2.
"""

import argparse
import os
from pathlib import Path

from checkpoint import claim_run_folder, free_run_folder, settle_resume
from data import IMAGE_TRANSFORMS
from errors import count, fraction, non_negative, non_negative_int, number, positive
from eval import default_device
from loss import IMPLEMENTATIONS, LOSS_VARIANTS
from model import ModelConfig
from pretrain import FINE_TUNE, FROM_SCRATCH, PRETRAIN_STEPS, fine_tunes_pretrained
from recipes import RECIPES, apply_recipe, flags_given
from synth import DEFAULT_SYNTH_DIR, synth_classes

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train CLIP / SemCLIP. With no --data, follows the paper's protocol on the built-in synthetic "
                    "negation world (written on first use): a CLIP pretrained once on the world's web split, then "
                    "fine-tuned by --loss with its image tower frozen; evaluates both on the test split and prints "
                    "a table. Under torchrun, the same flags; --batch-size is the global batch.",
        epilog="examples:\n"
               "  python train.py\n"
               "  python train.py --loss clip --out out/clip\n"
               "  python train.py --from-scratch --loss semclip --steps 600\n"
               "  python train.py --data triplets.jsonl --model small --steps 20000 --out out/run1\n"
               "  python train.py --out out/run1 --resume\n"
               "  python train.py --data triplets.jsonl --init ViT-B-32.pt --freeze-vision --lr 1e-5\n"
               "  python train.py --recipe authors --data train.csv --init ViT-B-32.pt --out out/semclip\n"
               "  torchrun --standalone --nproc_per_node=2 train.py --device cpu --from-scratch --out out/ddp\n"
               "  torchrun --nproc_per_node=8 train.py --data t.jsonl --model B-32 --batch-size 4096 \\\n"
               "      --precision bf16 --accum-steps 4 --out out/b32",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    first = parser.add_argument_group("start here")
    first.add_argument("--data", type=Path, help="triplets .jsonl or the SemCLIP authors' .csv "
                                                 "(default: the synthetic world in data/synth)")
    first.add_argument("--loss", choices=list(LOSS_VARIANTS), default="semclip",
                       help="semclip (paper), clip (contrastive only), negclip (negations as hard negatives), "
                            "semclip_hn (semclip + negclip's hard negatives), semclip_tn (semclip_hn + L_truth), "
                            "conclip (CoN-CLIP's 3 terms, distractor images), siglip (semclip, SigLIP's sigmoid); "
                            "a preset of the weights below: a weight flag given wins (default: %(default)s)")
    first.add_argument("--steps", type=count, help=f"optimizer steps (default: {FINE_TUNE['steps']} fine-tuning the "
                                                   f"built-in pretrained CLIP, else {FROM_SCRATCH['steps']})")
    first.add_argument("--out", type=Path, help="run folder (default: out/<loss>, or out/<loss>-2, ... when taken)")
    first.add_argument("--init", "--init-from", type=Path, metavar="PATH",
                       help="start from these weights (our checkpoint, or published OpenAI / open_clip weights): "
                            "their config and tokenizer, --model ignored, fresh optimizer at step 0 "
                            "(default: the built-in world's pretrained CLIP, made once)")
    data = parser.add_argument_group("data")
    data.add_argument("--synth-dir", type=Path, default=DEFAULT_SYNTH_DIR,
                      help="where the synthetic world lives when no --data is given (default: %(default)s)")
    data.add_argument("--true-negations", type=fraction, default=0.0, metavar="P",
                      help="train on SYNTH_DIR-true-negP: P of its captions also negate an absent object (default: 0)")
    data.add_argument("--negation-heldout", type=number(int, at_least=0, at_most=len(synth_classes())), default=0,
                      metavar="K", help="train on a world whose negations never name K held-out classes; "
                                        "eval reports mcq_negation_heldout (default: 0)")
    data.add_argument("--reword-negations", action="store_true",
                      help="train on SYNTH_DIR-...-reworded: the true negations' paraphrases negate in another of "
                           "the world's forms ('no Y' -> 'there is no Y'), so L_para teaches that the forms are one")
    data.add_argument("--caption-augment", choices=("paraphrase",), help="each caption or its paraphrase, at random")
    data.add_argument("--workers", type=non_negative_int, default=2,
                      help="DataLoader workers per process (default: %(default)s)")
    model = parser.add_argument_group("model and loss")
    model.add_argument("--from-scratch", action="store_true",
                       help="on the built-in world: train from random weights, no pretrained CLIP")
    model.add_argument("--model", default="tiny", help="preset: tiny, small, B-32 (default: %(default)s)")
    model.add_argument("--pretrain-steps", type=count, default=PRETRAIN_STEPS,
                       help="steps of the web stage, when the built-in pretrained CLIP is made (once; another count "
                            "is another model, kept beside it) (default: %(default)s)")
    model.add_argument("--activation", choices=("gelu", "quick_gelu"),
                       help="with --init: the MLP activation, for published weights that do not record it "
                            "(open_clip's -quickgelu models need quick_gelu; default: recorded, else gelu)")
    model.add_argument("--image-transform", choices=IMAGE_TRANSFORMS,
                       help="clip: resize, centre crop, CLIP mean/std, random crop in training; authors: the "
                            "SemCLIP authors' squash to S x S, ImageNet mean/std, no crop, no augmentation. "
                            "Recorded in the checkpoint (default: the --init checkpoint's, else clip)")
    model.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction,
                       help="train the text tower only, as the authors (default: on when fine-tuning the built-in "
                            "pretrained CLIP, else off)")
    model.add_argument("--freeze-text-embeddings", action="store_true",
                       help="keep the token and position embeddings as they are: only the text transformer, its "
                            "final norm and projection train (with --init or the built-in pretrained CLIP)")
    weights = ", ".join(f"{name} {WEIGHT_DEFAULTS | LOSS_VARIANTS[name]}" for name in ("clip", "semclip_tn"))
    model.add_argument("--contrastive-weight", type=non_negative, default=1.0,
                       help="a in (aL_clip + bL_para + cL_neg + dL_truth) / (a + b + c + d) (default: 1)")
    model.add_argument("--paraphrase-weight", type=non_negative, help="b (default: the --loss preset's)")
    model.add_argument("--negation-weight", type=non_negative, help="c (default: the --loss preset's)")
    model.add_argument("--truth-weight", type=non_negative,
                       help=f"d (default: the --loss preset's; 0 = no L_truth). Presets: {weights}, ...")
    model.add_argument("--num-projections", type=count, default=2, help="K, rows of the projection basis")
    model.add_argument("--paraphrase-projections", type=non_negative_int, default=0, metavar="K",
                       help="L_para in its own K-dim subspace (0: L_neg's; the embedding width: the full embedding)")
    model.add_argument("--learnable-projections", action="store_true", help="learn the basis (default: fixed)")
    model.add_argument("--no-normalize-projections", action="store_true", help="skip normalising p(x)")
    model.add_argument("--contrastive-impl", choices=IMPLEMENTATIONS, default="auto",
                       help="how L_clip is computed: reference (plain F.cross_entropy, to check the others), "
                            "tiled (fused, hand-written backward), triton (fused GPU kernel), triton-bf16 (the kernel "
                            "on bf16 tiles of fp32 features: faster, less exact), auto (the tiled op on CPU; on CUDA "
                            "the faster of triton and tiled, checked on the first batch) (default: %(default)s)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=count, default=128, help="global batch, all processes and "
                                                                     "micro-batches together (default: %(default)s)")
    optim.add_argument("--accum-steps", type=count, default=1,
                       help="split each process's batch into this many micro-batches (default: %(default)s)")
    optim.add_argument("--accumulation", choices=("cached", "plain"), default="cached",
                       help="cached: the loss still over the whole batch (gradient caching), the same result "
                            "with less memory; plain: each micro-batch its own loss, gradients averaged, as "
                            "the authors' Lightning accumulate_grad_batches (default: %(default)s)")
    optim.add_argument("--epochs", type=positive, help="train for this many epochs instead of --steps")
    optim.add_argument("--lr", type=positive, help=f"peak learning rate (default: {FINE_TUNE['lr']:g} fine-tuning the "
                                                   f"built-in pretrained CLIP, else {FROM_SCRATCH['lr']:g})")
    optim.add_argument("--weight-decay", type=non_negative, default=0.1, help="AdamW's (default: %(default)s)")
    optim.add_argument("--decay", choices=("matrices", "all"), default="matrices",
                       help="which parameters weight decay applies to; matrices spares gains, biases and the "
                            "logit scale (default: %(default)s)")
    optim.add_argument("--betas", type=number(at_least=0, below=1), nargs=2, default=(0.9, 0.98), metavar=("B1", "B2"),
                       help="AdamW's, each in [0, 1) (default: 0.9 0.98)")
    optim.add_argument("--adam-eps", type=positive, default=1e-6, help="AdamW's epsilon (default: %(default)s)")
    optim.add_argument("--warmup", type=non_negative_int, help=f"linear warm-up steps (default: {FINE_TUNE['warmup']} "
                                                               f"fine-tuning, else {FROM_SCRATCH['warmup']})")
    optim.add_argument("--grad-clip", type=non_negative, default=1.0,
                       help="max grad norm, 0 = off (default: %(default)s)")
    optim.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="bf16: encoders under autocast, loss in fp32 (default: %(default)s)")
    optim.add_argument("--temperature", type=positive,
                       help="restart the learnable logit scale at log(1/T), as the authors' fresh one at T = 0.07 "
                            "(default: keep the model's)")
    optim.add_argument("--clamp-logit-scale", action=argparse.BooleanOptionalAction, default=True,
                       help="cap the logit scale at 100 after each step, as CLIP (default: %(default)s)")
    optim.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="a mild random crop in training (--image-transform clip only) (default: %(default)s)")
    optim.add_argument("--compile", action="store_true", help="torch.compile the model")
    run = parser.add_argument_group("run")
    run.add_argument("--recipe", choices=list(RECIPES),
                     help="a published recipe's settings (recipes.py), printed at start; flags given win")
    run.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    run.add_argument("--device", default=default_device(),
                     help="cpu, cuda, cuda:1; under torchrun cuda means cuda:LOCAL_RANK (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in OUT exactly, with its own settings (a flag that changes what the "
                          "run is refuses)")
    run.add_argument("--overwrite", action="store_true", help="replace the run that OUT holds (default: refuse)")
    run.add_argument("--log-every", type=count, default=20, help="progress line every N steps (default: %(default)s)")
    run.add_argument("--save-every", type=count, default=200, help="checkpoint every N steps (default: %(default)s)")
    run.add_argument("--keep", type=count, default=3, help="keep the last N OUT/ckpt_step*.pt (default: %(default)s)")
    args = parser.parse_args(argv)
    given = flags_given(parser, argv)
    if args.resume and args.out is None:
        parser.error("--resume needs the --out of the run to continue")
    if args.data and (args.true_negations or args.negation_heldout or args.reword_negations):
        parser.error("--true-negations, --negation-heldout and --reword-negations choose a built-in world; "
                     "not with --data")
    if args.reword_negations and not args.true_negations:
        parser.error("--reword-negations rewords the paraphrases of the true negations in the captions: "
                     "give --true-negations P > 0 too")
    for line in settle(args, given):
        if int(os.environ.get("RANK", "0")) == 0:
            print(line)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if args.batch_size % (world_size * args.accum_steps):
        parser.error(f"--batch-size {args.batch_size} is not divisible by {world_size} processes x "
                     f"--accum-steps {args.accum_steps}; pick a multiple")
    if args.init is not None and not args.init.exists():
        parser.error(f"--init {args.init}: no such file")
    try:
        ModelConfig.preset(args.model)
    except ValueError as error:
        parser.error(str(error))
    return args


WEIGHT_DEFAULTS = {"paraphrase_weight": 1.0, "negation_weight": 1.0, "truth_weight": 0.0}


def settle(args, given: set):
    """Every setting's effective value, and one line per setting to print: --resume takes the run's
    own; otherwise the protocol's defaults, then --recipe's, then the --loss preset's weights, and a
    flag given on the command line wins over all of them."""
    lines = []
    if args.resume:
        lines, recorded = settle_resume(args, given)
        given = given | recorded  # a run's recorded settings are not replaced by defaults
    protocol = FINE_TUNE if fine_tunes_pretrained(args) else FROM_SCRATCH
    for name, value in protocol.items():
        if name not in given:
            setattr(args, name, value)
    if args.recipe and not args.resume:
        lines += apply_recipe(args, given)
    for name, value in (WEIGHT_DEFAULTS | LOSS_VARIANTS[args.loss]).items():
        if name in WEIGHT_DEFAULTS and name not in given:
            setattr(args, name, value)
    if not args.resume:
        default_out = args.out is None
        args.out = free_run_folder(args.out or Path("out") / args.loss, default_out)
        if not args.overwrite:
            claim_run_folder(args.out, overwrite=False)  # refuses (one line) if OUT holds a run
    weights = " ".join(f"{letter}={getattr(args, f'{term}_weight'):g}"
                       for letter, term in zip("abcd", ("contrastive", "paraphrase", "negation", "truth")))
    how = "fine-tuning the built-in pretrained CLIP" if fine_tunes_pretrained(args) else \
        f"from {args.init}" if args.init else "from scratch"
    return lines + [f"settings: --loss {args.loss} ({weights}), {how}, {args.steps} steps, lr {args.lr:g}, "
                    f"warmup {args.warmup}, {'vision frozen' if args.freeze_vision else 'both towers train'}"
                    f"{', text embeddings frozen' if args.freeze_text_embeddings else ''}, "
                    f"batch {args.batch_size}, seed {args.seed} -> {args.out}"]
