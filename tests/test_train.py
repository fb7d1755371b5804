"""train.py: a short run end to end, checkpoints, resume (also past a damaged ckpt.pt), determinism,
optimizer and schedule, gradient caching, bf16, non-finite stop, --init / --freeze-vision
(multi-process: test_distributed.py)."""

import json
import os
import re
import shutil
from contextlib import nullcontext
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch

from errors import DataError
from loss import LOSS_VARIANTS, SemCLIPLoss
from model import CLIP, ModelConfig, load_checkpoint, load_resume_checkpoint
from test_distributed import CONFIG
from train import build_loss, build_optimizer, learning_rate, parse_args

from conftest import help_examples, run_python


def train_cli(synth_dir, out, *extra):
    return run_python("train.py", "--data", synth_dir / "train.jsonl", "--batch-size", "16", "--workers", "0",
                   "--device", "cpu", "--log-every", "1", "--save-every", "2", "--out", out, *extra)


def test_two_steps_end_to_end_write_checkpoint_args_and_metrics(synth_dir, tmp_path):
    result = train_cli(synth_dir, tmp_path, "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "step 2/2" in result.stdout and "img/s" in result.stdout and "eta" in result.stdout
    model, ckpt = load_checkpoint(tmp_path / "ckpt.pt")  # weights_only inside
    assert ckpt["step"] == 2 and ckpt["tokenizer"] == "cl100k_base" and isinstance(model, CLIP)
    assert json.loads((tmp_path / "args.json").read_text())["loss"] == "semclip"
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert {"loss", "contrastive", "paraphrase", "negation", "lr", "logit_scale", "images_per_s"} <= set(lines[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_continues_from_the_saved_step_to_the_same_weights(synth_dir, tmp_path):
    assert train_cli(synth_dir, tmp_path / "straight", "--steps", "4").returncode == 0
    assert train_cli(synth_dir, tmp_path / "split", "--steps", "2").returncode == 0
    resumed = train_cli(synth_dir, tmp_path / "split", "--steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout and "step 3/4" in resumed.stdout
    straight = torch.load(tmp_path / "straight/ckpt.pt", weights_only=True)
    split = torch.load(tmp_path / "split/ckpt.pt", weights_only=True)
    assert split["step"] == 4
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(split["model"][name], tensor, rtol=0, atol=0, msg=name)


def test_resume_with_a_cut_short_ckpt_pt_continues_from_the_newest_step_file_that_reads(synth_dir, tmp_path):
    flags = ("--save-every", "1", "--warmup", "1")
    assert train_cli(synth_dir, tmp_path / "run", "--steps", "3", *flags).returncode == 0
    (tmp_path / "reference").mkdir()  # the same run resumed from ckpt_step3.pt, the newest step file
    shutil.copy(tmp_path / "run/ckpt_step3.pt", tmp_path / "reference/ckpt.pt")
    latest = tmp_path / "run/ckpt.pt"
    cut_short = latest.read_bytes()[:5000]
    latest.unlink()  # a copy cut short: the step files are intact
    latest.write_bytes(cut_short)
    resumed = train_cli(synth_dir, tmp_path / "run", "--steps", "5", *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    [warning] = [line for line in resumed.stderr.splitlines() if line.startswith("warning:")]
    assert warning == (f"warning: {latest}: truncated: the end of its zip archive is missing; resuming from "
                       f"{tmp_path / 'run/ckpt_step3.pt'}, the newest of the kept ckpt_step3.pt, ckpt_step2.pt, "
                       "ckpt_step1.pt that reads")
    assert "at step 3" in resumed.stdout and "step 5/5" in resumed.stdout
    assert train_cli(synth_dir, tmp_path / "reference", "--steps", "5", *flags, "--resume").returncode == 0
    run = torch.load(tmp_path / "run/ckpt.pt", weights_only=True)
    reference = torch.load(tmp_path / "reference/ckpt.pt", weights_only=True)
    assert run["step"] == reference["step"] == 5
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(run["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert_same_optimizer_state(run["optimizer"]["state"], reference["optimizer"]["state"])


def tiny_checkpoint(path, step):
    """The keys load_resume_checkpoint needs of a train.py checkpoint, at `step` (training state left empty)."""
    torch.save({"model_config": asdict(CONFIG), "tokenizer": "cl100k_base", "model": CLIP(CONFIG).state_dict(),
                "step": step, "optimizer": {}, "loss": {}, "rng": {}}, path)


def test_resume_falls_back_past_every_step_file_that_does_not_read(tmp_path):
    """train.py's ckpt.pt is a hard link to the newest step file: cut short in place, both are."""
    for step in (1, 2, 3):
        tiny_checkpoint(tmp_path / f"ckpt_step{step}.pt", step)
    os.link(tmp_path / "ckpt_step3.pt", tmp_path / "ckpt.pt")
    with open(tmp_path / "ckpt.pt", "r+b") as file:
        file.truncate(3000)
    model, ckpt, warning = load_resume_checkpoint(tmp_path)
    assert ckpt["step"] == 2 and model.config == CONFIG
    assert warning == (f"warning: {tmp_path / 'ckpt.pt'}: truncated: the end of its zip archive is missing; "
                       f"resuming from {tmp_path / 'ckpt_step2.pt'}, the newest of the kept ckpt_step3.pt, "
                       "ckpt_step2.pt, ckpt_step1.pt that reads")


def test_resume_with_nothing_that_reads_is_one_line_naming_the_files(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    (tmp_path / "ckpt_step4.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'ckpt.pt'}: file is empty; none of the kept "
                                                  "ckpt_step4.pt reads either; start again without --resume")):
        load_resume_checkpoint(tmp_path)
    (tmp_path / "ckpt_step4.pt").unlink()
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'ckpt.pt'}: file is empty; download or copy it again")):
        load_resume_checkpoint(tmp_path)


def test_resume_from_step_files_alone_when_ckpt_pt_is_missing(tmp_path):
    """A run killed between writing ckpt_step{N}.pt and pointing ckpt.pt at it."""
    tiny_checkpoint(tmp_path / "ckpt_step2.pt", 2)
    _, ckpt, warning = load_resume_checkpoint(tmp_path)
    assert ckpt["step"] == 2 and "ckpt.pt: file does not exist; resuming from" in warning


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(synth_dir, tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert train_cli(synth_dir, tmp_path / name, "--steps", "2", "--seed", seed).returncode == 0
    weights = {n: torch.load(tmp_path / n / "ckpt.pt", weights_only=True)["model"]["text_projection"] for n in "abc"}
    assert torch.equal(weights["a"], weights["b"]) and not torch.equal(weights["a"], weights["c"])


def test_resume_from_weights_without_training_state_is_one_clear_line(synth_dir, tmp_path, tiny_ckpt):
    (tmp_path / "run").mkdir()
    shutil.copy(tiny_ckpt, tmp_path / "run" / "ckpt.pt")  # a model, but no optimizer, step or RNG state
    result = train_cli(synth_dir, tmp_path / "run", "--steps", "2", "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no training state" in result.stderr and "--init" in result.stderr


def test_resume_without_a_checkpoint_is_one_clear_line(synth_dir, tmp_path):
    result = train_cli(synth_dir, tmp_path / "empty", "--steps", "2", "--resume")
    assert result.returncode == 1 and "no checkpoint to resume from" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_plain_reference_loss_trains_the_same_run_as_the_fused_op(synth_dir, tmp_path):
    """--contrastive-impl reference (F.cross_entropy) vs tiled: the same run up to float32 summation order."""
    for impl in ("reference", "tiled"):
        assert train_cli(synth_dir, tmp_path / impl, "--steps", "3", "--contrastive-impl", impl).returncode == 0
    runs = {impl: torch.load(tmp_path / impl / "ckpt.pt", weights_only=True)["model"]
            for impl in ("reference", "tiled")}
    for name, tensor in runs["reference"].items():
        torch.testing.assert_close(runs["tiled"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("loss", ["clip", "negclip", "semclip_hn", "conclip"])
def test_baseline_losses_train(synth_dir, tmp_path, loss):
    result = train_cli(synth_dir, tmp_path, "--steps", "1", "--loss", loss)
    assert result.returncode == 0, result.stderr


def test_semclip_tn_trains_on_the_true_negations_and_only_it_logs_l_truth(synth_dir, tmp_path):
    for loss in ("semclip_tn", "semclip"):
        result = train_cli(synth_dir, tmp_path / loss, "--steps", "1", "--loss", loss, "--paraphrase-projections", "96")
        assert result.returncode == 0, result.stderr
    [logged] = [json.loads(line) for line in (tmp_path / "semclip_tn" / "metrics.jsonl").read_text().splitlines()]
    assert logged["truth"] > 0 and logged["loss"] == pytest.approx(
        (logged["contrastive"] + logged["paraphrase"] + logged["negation"] + logged["truth"]) / 4, abs=1e-4)
    assert SemCLIPLoss(96, **LOSS_VARIANTS["semclip_tn"]).texts == ("paraphrase", "negation", "true_negation")
    assert "truth" not in (tmp_path / "semclip" / "metrics.jsonl").read_text()


def test_clip_trains_on_captions_alone_and_logs_valid_json(synth_dir, tmp_path):
    lines = [json.loads(line) for line in (synth_dir / "train.jsonl").read_text().splitlines()]
    captions_only = tmp_path / "captions.jsonl"
    captions_only.write_text("".join(json.dumps({"image": str(synth_dir / r["image"]), "caption": r["caption"]}) + "\n"
                                     for r in lines))
    result = run_python("train.py", "--data", captions_only, "--loss", "clip", "--batch-size", "16", "--steps", "1",
                     "--workers", "0", "--device", "cpu", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    [logged] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged["paraphrase"] is None and logged["negation"] is None and logged["contrastive"] > 0


def test_from_scratch_run_trains_then_prints_the_synthetic_table(synth_dir, tmp_path):
    result = run_python("train.py", "--synth-dir", synth_dir, "--from-scratch", "--batch-size", "16", "--steps", "1",
                        "--workers", "0", "--device", "cpu", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "orig_over_neg" in result.stdout and "t2i_r1" in result.stdout and "zeroshot_neg" in result.stdout
    assert "pretrain" not in result.stdout and json.loads((tmp_path / "args.json").read_text())["init"] is None


def test_help_has_examples_and_every_example_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples name --out folders: runs of one's own in out/ must not clash
    result = run_python("train.py", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "--resume" in result.stdout
    examples = help_examples(result.stdout, "train.py")
    assert len(examples) >= 5
    for argv in examples:
        parse_args([a if a != "ViT-B-32.pt" else __file__ for a in argv])  # --init must exist


def test_no_weight_decay_on_gains_biases_and_logit_scale_unless_decay_all():
    model = CLIP(ModelConfig.preset("tiny"))
    args = SimpleNamespace(lr=1e-3, weight_decay=0.1, decay="matrices", betas=(0.9, 0.98), adam_eps=1e-6)
    decayed, plain = build_optimizer(args, model, SemCLIPLoss(model.config.embed_dim)).param_groups
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert id(model.logit_scale) in ids(plain) and id(model.ln_final.weight) in ids(plain)
    assert id(model.visual.conv1.weight) in ids(decayed) and plain["weight_decay"] == 0.0
    assert decayed["weight_decay"] == 0.1 and decayed["betas"] == (0.9, 0.98) and decayed["eps"] == 1e-6
    args = SimpleNamespace(lr=1e-3, weight_decay=0.2, decay="all", betas=(0.9, 0.999), adam_eps=1e-8)
    decayed, plain = build_optimizer(args, model, SemCLIPLoss(model.config.embed_dim)).param_groups
    assert ids(decayed) == {id(p) for p in model.parameters()} and plain["params"] == []
    assert decayed["weight_decay"] == 0.2 and decayed["betas"] == (0.9, 0.999) and decayed["eps"] == 1e-8


def test_authors_recipe_sets_their_defaults_and_flags_given_win():
    """The values of aaai26-paper12649/SemCLIP src/args.py, training_params.py, model.py, dataset.py."""
    args = parse_args(["--recipe", "authors"])
    settings = (args.epochs, args.lr, args.weight_decay, args.decay, args.warmup, args.seed)
    assert settings == (200, 5e-5, 0.2, "all", 50, 42)
    assert (tuple(args.betas), args.adam_eps, args.precision, args.freeze_vision) == ((0.9, 0.999), 1e-8, "bf16", True)
    assert (args.batch_size, args.accum_steps, args.accumulation) == (512, 2, "plain")  # 256 per loss, 2 accumulated
    assert (args.temperature, args.clamp_logit_scale, args.image_transform) == (0.07, False, "authors")
    given = parse_args(["--recipe", "authors", "--steps", "2", "--seed", "0", "--no-freeze-vision",
                        "--batch-size", "8"])
    assert (given.steps, given.epochs, given.seed, given.freeze_vision, given.batch_size) == (2, None, 0, False, 8)
    assert given.weight_decay == 0.2 and parse_args([]).weight_decay == 0.1


def test_authors_recipe_run_prints_what_it_set_and_records_it(synth_dir, tmp_path):
    result = train_cli(synth_dir, tmp_path, "--recipe", "authors", "--steps", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    recipe_lines = [line for line in lines if line.startswith("recipe authors:")]
    assert lines[:len(recipe_lines)] == recipe_lines  # the run's first lines
    for expected in ("--weight-decay 0.2 (ours: --weight-decay 0.1)", "--warmup 50", "--seed 42", "--decay all",
                     "--betas 0.9 0.999", "--adam-eps 1e-08", "--no-clamp-logit-scale", "--image-transform authors",
                     "--batch-size 16 as given", "--steps 2 as given"):
        assert any(expected in line for line in recipe_lines), expected
    recorded = json.loads((tmp_path / "args.json").read_text())
    settings = (recorded["weight_decay"], recorded["warmup"], recorded["seed"], recorded["recipe"])
    assert settings == (0.2, 50, 42, "authors")
    assert recorded["betas"] == [0.9, 0.999] and recorded["steps"] == 2 and recorded["epochs"] is None
    # a fresh logit scale 1/0.07, left unclamped (lr 5e-5 barely moves it in 2 steps)
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert abs(last["logit_scale"] - 1 / 0.07) < 0.01


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    assert [learning_rate(s, 14, 1.0, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(9, 14, 1.0, 4) == pytest.approx(0.5)
    assert learning_rate(14, 14, 1.0, 4) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- at scale

def test_gradient_caching_k_micro_batches_equals_one_batch_and_bf16_runs():
    """Tolerance: float32 rounding (atol 1e-5 on gradients up to ~5); bf16 only has to run and stay close."""
    from test_distributed import CONFIG, LOSS_ARGS, global_batch
    from train import train_step

    def step(accum_steps, autocast=None, accumulation="cached"):
        torch.manual_seed(0)
        model, loss_fn = CLIP(CONFIG), build_loss(LOSS_ARGS, CONFIG.embed_dim)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
        loss = train_step(model, model.logit_scale, loss_fn, global_batch(8), accum_steps, context,
                          accumulation)["loss"]
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss, grads = step(1)
    for accum_steps in (2, 4):
        cached_loss, cached_grads = step(accum_steps)
        torch.testing.assert_close(cached_loss, loss, rtol=1e-5, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-5, msg=f"K={accum_steps} {name}")
    # plain accumulation: the mean of the two halves' own losses and gradients
    torch.manual_seed(0)
    model, loss_fn = CLIP(CONFIG), build_loss(LOSS_ARGS, CONFIG.embed_dim)
    halves = [tuple(t[rows] for t in global_batch(8)) for rows in (slice(0, 4), slice(4, 8))]
    half_losses = [train_step(model, model.logit_scale, loss_fn, half)["loss"] for half in halves]
    summed = {n: p.grad.clone() for n, p in model.named_parameters()}  # backward accumulates both halves
    plain_loss, plain_grads = step(2, accumulation="plain")
    torch.testing.assert_close(plain_loss, sum(half_losses) / 2, rtol=1e-5, atol=1e-6)
    for name, grad in summed.items():
        torch.testing.assert_close(plain_grads[name], grad / 2, rtol=1e-4, atol=1e-5, msg=f"plain {name}")
    bf16_loss, bf16_grads = step(2, autocast=True)
    assert bf16_loss.dtype == torch.float32 and abs(bf16_loss - loss) < 0.05
    assert all(torch.isfinite(g).all() for g in bf16_grads.values())


def test_exact_resume_mid_schedule_with_accumulation_and_bf16_keeps_the_last_checkpoints(synth_dir, tmp_path):
    flags = ("--steps", "4", "--warmup", "1", "--save-every", "1", "--accum-steps", "2", "--precision", "bf16")
    assert train_cli(synth_dir, tmp_path / "straight", *flags).returncode == 0
    assert sorted(p.name for p in (tmp_path / "straight").glob("ckpt*")) == [
        "ckpt.pt", "ckpt_step2.pt", "ckpt_step3.pt", "ckpt_step4.pt"]  # --keep 3
    # a run stopped after step 2 (in the cosine part of the schedule): its state is ckpt_step2.pt
    (tmp_path / "stopped").mkdir()
    shutil.copy(tmp_path / "straight/ckpt_step2.pt", tmp_path / "stopped/ckpt.pt")
    resumed = train_cli(synth_dir, tmp_path / "stopped", *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    straight = torch.load(tmp_path / "straight/ckpt.pt", weights_only=True)
    split = torch.load(tmp_path / "stopped/ckpt.pt", weights_only=True)
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(split["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert_same_optimizer_state(split["optimizer"]["state"], straight["optimizer"]["state"])


def assert_same_optimizer_state(actual: dict, expected: dict):
    """Every tensor of every parameter's AdamW state (step, exp_avg, exp_avg_sq), bit for bit."""
    assert actual.keys() == expected.keys()
    for index, state in expected.items():
        assert actual[index].keys() == state.keys()
        for name, tensor in state.items():
            torch.testing.assert_close(actual[index][name], tensor, rtol=0, atol=0, msg=f"{index}.{name}")


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(synth_dir, tmp_path):
    result = train_cli(synth_dir, tmp_path, "--steps", "3", "--save-every", "1", "--warmup", "0", "--lr", "1e30")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "loss is nan" in result.stderr and "stopped before updating the weights" in result.stderr
    failed_step = int(result.stderr.split("error: step ")[1].split(":")[0])
    assert load_checkpoint(tmp_path / "ckpt.pt")[1]["step"] == failed_step - 1


def test_init_from_a_checkpoint_fine_tunes_the_text_tower_only_from_step_zero(synth_dir, tmp_path):
    assert train_cli(synth_dir, tmp_path / "base", "--steps", "1").returncode == 0
    result = train_cli(synth_dir, tmp_path / "tuned", "--steps", "1", "--init", tmp_path / "base/ckpt.pt",
                       "--freeze-vision", "--model", "small")  # --model is ignored with --init
    assert result.returncode == 0, result.stderr
    base, _ = load_checkpoint(tmp_path / "base/ckpt.pt")
    tuned, ckpt = load_checkpoint(tmp_path / "tuned/ckpt.pt")
    assert ckpt["step"] == 1 and tuned.config == base.config and ckpt["tokenizer"] == "cl100k_base"
    assert all(torch.equal(p, q) for p, q in zip(tuned.visual.parameters(), base.visual.parameters()))
    assert not torch.equal(tuned.text_projection, base.text_projection)
    assert train_cli(synth_dir, tmp_path / "tuned2", "--steps", "1", "--init", tmp_path / "base/ckpt.pt",
                     "--freeze-text-embeddings").returncode == 0
    tuned, _ = load_checkpoint(tmp_path / "tuned2/ckpt.pt")
    assert torch.equal(tuned.token_embedding.weight, base.token_embedding.weight)
    assert torch.equal(tuned.positional_embedding, base.positional_embedding)
    assert not torch.equal(tuned.transformer.resblocks[0].attn.in_proj_weight,
                           base.transformer.resblocks[0].attn.in_proj_weight)


def test_batch_not_divisible_by_micro_batches_is_a_usage_error(synth_dir, tmp_path):
    result = train_cli(synth_dir, tmp_path, "--steps", "1", "--accum-steps", "3")
    assert result.returncode == 2 and "error: --batch-size 16 is not divisible" in result.stderr
    assert "Traceback" not in result.stderr


def test_true_negations_train_on_a_sibling_world_with_the_same_test_split(synth_dir, tmp_path):
    world = tmp_path / "synth"
    shutil.copytree(synth_dir, world)
    shutil.rmtree(world / "images")  # the paper's world is written again when missing: eval.py scores on it
    (world / "train.jsonl").unlink()
    result = run_python("train.py", "--synth-dir", world, "--from-scratch", "--true-negations", "0.5",
                        "--caption-augment", "paraphrase",
                        "--paraphrase-projections", "96", "--batch-size", "16", "--steps", "1", "--workers", "0",
                        "--device", "cpu", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    sibling = tmp_path / "synth-true-neg0.5"
    settings = json.loads((sibling / "world.json").read_text())
    assert settings == {**json.loads((world / "world.json").read_text()), "true_negations": 0.5, "n_web": 0}
    assert (sibling / "test.jsonl").read_text() == (world / "test.jsonl").read_text()
    assert (world / "train.jsonl").is_file() and (world / "images/test_000039.png").is_file()
    assert "mcq_negation" in result.stdout
    (sibling / "world.json").write_text(json.dumps({**settings, "true_negations": 0.3}))
    stale = run_python("train.py", "--synth-dir", world, "--from-scratch", "--true-negations", "0.5", "--steps", "1",
                       "--workers", "0",
                       "--device", "cpu", "--out", tmp_path / "run2")
    assert stale.returncode == 1 and "written by other settings" in stale.stderr.strip().splitlines()[-1]
    for flag in (["--true-negations", "0.5"], ["--reword-negations"]):
        clash = run_python("train.py", "--data", world / "train.jsonl", *flag)
        assert clash.returncode == 2 and "not with --data" in clash.stderr
    alone = run_python("train.py", "--reword-negations", "--out", tmp_path / "run3")
    assert alone.returncode == 2 and "give --true-negations" in alone.stderr

def test_image_transform_is_recorded_in_the_checkpoint_and_used_by_eval(synth_dir, tmp_path):
    assert train_cli(synth_dir, tmp_path / "authors", "--steps", "1", "--image-transform", "authors").returncode == 0
    model, ckpt = load_checkpoint(tmp_path / "authors/ckpt.pt")
    assert model.config.image_transform == "authors" == ckpt["args"]["image_transform"]
    tuned = train_cli(synth_dir, tmp_path / "tuned", "--steps", "1", "--init", tmp_path / "authors/ckpt.pt")
    assert tuned.returncode == 0 and load_checkpoint(tmp_path / "tuned/ckpt.pt")[0].config.image_transform == "authors"
    for flags, expected in (((), "image transform authors"), (("--image-transform", "clip"), "image transform clip")):
        result = run_python("eval.py", "--bench", "synth", "--ckpt", tmp_path / "tuned/ckpt.pt", "--data-root",
                            synth_dir, "--limit", "4", "--device", "cpu", *flags)
        assert result.returncode == 0 and expected in result.stderr, result.stderr
