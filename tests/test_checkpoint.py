"""checkpoint.py: one folder holds one run; a second fresh run refuses (or takes a new default folder);
--resume takes the run's own settings and refuses a flag that would make it another run."""

import json

from checkpoint import free_run_folder

from conftest import run_python


def train_into(synth_dir, out, *extra):
    return run_python("train.py", "--data", synth_dir / "train.jsonl", "--batch-size", "16", "--workers", "0",
                      "--device", "cpu", "--log-every", "1", "--out", out, *extra)


def test_a_second_run_into_the_same_folder_refuses_and_leaves_the_first_run_as_it_was(synth_dir, tmp_path):
    assert train_into(synth_dir, tmp_path, "--steps", "2").returncode == 0
    first = {name: (tmp_path / name).read_bytes() for name in ("ckpt.pt", "args.json", "metrics.jsonl")}
    again = train_into(synth_dir, tmp_path, "--steps", "1", "--loss", "clip")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip() == (f"error: {tmp_path} already holds a run (ckpt.pt, args.json, metrics.jsonl); "
                                    "continue it with --resume, replace it with --overwrite, or pick another --out")
    assert {name: (tmp_path / name).read_bytes() for name in first} == first
    assert sorted(p.name for p in tmp_path.glob("ckpt_step*.pt")) == ["ckpt_step2.pt"]
    replaced = train_into(synth_dir, tmp_path, "--steps", "1", "--loss", "clip", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in tmp_path.glob("ckpt_step*.pt")) == ["ckpt_step1.pt"]


def test_the_default_folder_takes_the_next_free_name(tmp_path):
    out = tmp_path / "semclip"
    assert free_run_folder(out, default=True) == out
    out.mkdir()
    (out / "args.json").write_text("{}")
    assert free_run_folder(out, default=True) == tmp_path / "semclip-2"
    assert free_run_folder(out, default=False) == out  # a folder the user named is never swapped


def test_resume_takes_the_runs_settings_and_refuses_to_make_it_another_run(synth_dir, tmp_path):
    assert train_into(synth_dir, tmp_path, "--steps", "2", "--lr", "0.002").returncode == 0
    for flags, setting in ((("--model", "small"), "--model tiny"), (("--loss", "clip"), "--loss semclip"),
                           (("--batch-size", "8"), "--batch-size 16")):
        refused = train_into(synth_dir, tmp_path, "--resume", *flags)
        assert refused.returncode == 1 and "training small" not in refused.stdout
        assert refused.stderr.strip().splitlines() == [
            f"error: --resume: {tmp_path} is a run with {setting}; {' '.join(flags)} would make it another run; "
            "drop the flag, or start a new run with another --out"]
    longer = run_python("train.py", "--out", tmp_path, "--resume", "--steps", "3")
    assert longer.returncode == 0, longer.stderr
    assert "--resume: --steps 3 (the run had 2)" in longer.stdout and "training tiny" in longer.stdout
    args = json.loads((tmp_path / "args.json").read_text())
    assert (args["steps"], args["lr"], args["batch_size"]) == (3, 0.002, 16)  # the rest is the run's own
