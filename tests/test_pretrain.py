"""pretrain.py: the default run makes a CLIP on the world's web split once, fine-tunes it with the image
tower frozen, and shows both side by side; the next run reuses it. eval.py scores negation of classes
that no training negation named."""

import json
import shutil

import torch

from model import load_checkpoint
from pretrain import pretrained_dir
from synth import write_synth

from conftest import run_python


def default_run(world, out, *extra):
    return run_python("train.py", "--synth-dir", world, "--pretrain-steps", "2", "--steps", "1", "--batch-size", "16",
                      "--workers", "0", "--device", "cpu", "--out", out, *extra)


def test_the_default_run_pretrains_once_then_fine_tunes_with_the_image_tower_frozen(synth_dir, tmp_path):
    world = tmp_path / "synth"
    shutil.copytree(synth_dir, world)
    first = default_run(world, tmp_path / "semclip")
    assert first.returncode == 0, first.stderr
    assert "pretraining CLIP on" in first.stdout and "web split" in first.stdout
    pretrained = pretrained_dir(world, "tiny", 2) / "ckpt.pt"
    assert json.loads((tmp_path / "semclip/args.json").read_text())["init"] == str(pretrained)
    base, tuned = load_checkpoint(pretrained)[0], load_checkpoint(tmp_path / "semclip/ckpt.pt")[0]
    assert all(torch.equal(p, q) for p, q in zip(tuned.visual.parameters(), base.visual.parameters()))
    assert not torch.equal(tuned.text_projection, base.text_projection)
    web = {json.loads(line)["image"] for line in (world / "web.jsonl").read_text().splitlines()}
    triplets = {json.loads(line)["image"] for line in (world / "train.jsonl").read_text().splitlines()}
    assert web and not web & triplets  # pretraining never saw a triplet's image
    table = first.stdout.split("synthetic test split", 1)[1]
    assert "pretrained" in table and "--loss semclip" in table
    results = json.loads((tmp_path / "semclip/results.json").read_text())
    assert set(results["pretrained"]["metrics"]) == set(results["metrics"])
    second = default_run(world, tmp_path / "clip", "--loss", "clip")
    assert second.returncode == 0, second.stderr
    assert "pretraining" not in second.stdout and "fine-tuning the built-in pretrained CLIP" in second.stdout


def test_a_world_without_a_web_split_is_one_line(tmp_path):
    world = write_synth(tmp_path / "w", n_train=8, n_test=4, seed=1, log=lambda *_: None)
    result = default_run(world, tmp_path / "run")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {world}: this world has no web split to pretrain on (written with --n-web 0); delete the folder "
        "to rewrite it, or pass --from-scratch or --init PATH"]


def test_eval_scores_negation_of_held_out_classes_on_a_world_that_holds_them_out(tiny_ckpt, tmp_path):
    world = write_synth(tmp_path / "w", n_train=40, n_test=30, seed=5, negation_heldout=4, log=lambda *_: None)
    result = run_python("eval.py", "--bench", "synth", "--ckpt", tiny_ckpt, "--data-root", world, "--device", "cpu",
                        "--out", tmp_path / "results.json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert 0 <= metrics["mcq_negation_heldout"] <= 1 and 0 <= metrics["mcq_negation_seen"] <= 1
    plain = write_synth(tmp_path / "p", n_train=40, n_test=30, seed=5, log=lambda *_: None)
    result = run_python("eval.py", "--bench", "synth", "--ckpt", tiny_ckpt, "--data-root", plain, "--device", "cpu",
                        "--out", tmp_path / "plain.json")
    assert "mcq_negation_heldout" not in json.loads((tmp_path / "plain.json").read_text())["metrics"]
