"""train_flags.py: presets set defaults and a flag given always wins, visibly; every number is checked as
it is parsed; the newcomer's flags come first in --help."""

import json

import pytest

from loss import LOSS_VARIANTS
from pretrain import FINE_TUNE, FROM_SCRATCH
from train import build_loss, parse_args

from conftest import run_python


def parsed(tmp_path, *argv):
    return parse_args([*map(str, argv), "--out", str(tmp_path / "run")])


def test_a_weight_flag_given_wins_over_the_loss_preset(tmp_path):
    truth = parsed(tmp_path, "--loss", "semclip_tn", "--truth-weight", "0.5")
    assert truth.truth_weight == 0.5 and build_loss(truth, 96).weights["truth"] == 0.5
    assert build_loss(truth, 96).negatives_in_contrastive  # the preset's other settings stay
    clip = parsed(tmp_path, "--loss", "clip", "--paraphrase-weight", "1")
    assert (clip.paraphrase_weight, clip.negation_weight) == (1.0, 0.0)
    assert build_loss(clip, 96).weights == {"contrastive": 1.0, "paraphrase": 1.0, "negation": 0.0}
    # not given: the preset's
    assert parsed(tmp_path, "--loss", "semclip_tn").truth_weight == LOSS_VARIANTS["semclip_tn"]["truth_weight"]
    assert parsed(tmp_path, "--loss", "clip").paraphrase_weight == 0.0


def test_the_effective_weights_are_printed_and_recorded(synth_dir, tmp_path):
    result = run_python("train.py", "--data", synth_dir / "train.jsonl", "--loss", "semclip_tn",
                        "--truth-weight", "0.5", "--steps", "2", "--batch-size", "16", "--workers", "0",
                        "--device", "cpu", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--loss semclip_tn (a=1 b=1 c=1 d=0.5)" in result.stdout.splitlines()[0]
    assert json.loads((tmp_path / "args.json").read_text())["truth_weight"] == 0.5


def test_a_baseline_encodes_only_its_terms_texts_and_logs_the_others_on_logging_steps(synth_dir, tmp_path):
    result = run_python("train.py", "--data", synth_dir / "train.jsonl", "--loss", "clip", "--steps", "3",
                        "--log-every", "2", "--batch-size", "16", "--workers", "0", "--device", "cpu",
                        "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [2, 3]
    assert all(line["paraphrase"] > 0 and line["negation"] >= 0 for line in logged)  # measured, not trained
    assert build_loss(parsed(tmp_path, "--loss", "clip"), 96).texts == ()


def test_the_protocol_sets_defaults_and_given_flags_win(tmp_path):
    fine_tune = parsed(tmp_path)
    assert {k: getattr(fine_tune, k) for k in FINE_TUNE} == FINE_TUNE and fine_tune.init is None
    scratch = parsed(tmp_path, "--from-scratch")
    assert {k: getattr(scratch, k) for k in FROM_SCRATCH} == FROM_SCRATCH
    own_data = parsed(tmp_path, "--data", "t.jsonl")
    assert {k: getattr(own_data, k) for k in FROM_SCRATCH} == FROM_SCRATCH
    given = parsed(tmp_path, "--steps", "7", "--lr", "0.01", "--no-freeze-vision", "--warmup", "0")
    assert (given.steps, given.lr, given.freeze_vision, given.warmup) == (7, 0.01, False, 0)


@pytest.mark.parametrize("flags", [("--lr", "-1"), ("--lr", "nan"), ("--betas", "1.5", "0.9"), ("--betas", "0.9", "1"),
                                   ("--weight-decay", "-1"), ("--grad-clip", "-1"), ("--temperature", "0"),
                                   ("--steps", "0"), ("--batch-size", "-4"), ("--workers", "-1"), ("--epochs", "inf"),
                                   ("--true-negations", "1.5"), ("--truth-weight", "-0.5"), ("--adam-eps", "0")])
def test_a_bad_number_is_argparses_usage_line_and_exit_2(flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(list(flags))
    error = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and error[0].startswith("usage:") and len(error) >= 2
    assert error[-1].startswith(f"train.py: error: argument {flags[0]}") or f"argument {flags[0]}" in error[-1]


def test_a_given_zero_is_a_value_not_unset(tmp_path):
    args = parsed(tmp_path, "--grad-clip", "0", "--weight-decay", "0", "--warmup", "0", "--paraphrase-weight", "0")
    assert (args.grad_clip, args.weight_decay, args.warmup, args.paraphrase_weight) == (0, 0, 0, 0)


def test_help_opens_with_the_flags_a_newcomer_needs():
    help_text = run_python("train.py", "--help").stdout
    first = help_text.split("start here:", 1)[1].split("\n\n", 1)[0]
    for flag in ("--data", "--loss", "--steps", "--out", "--init"):
        assert flag in first
    assert help_text.index("start here:") < help_text.index("optimisation:")
