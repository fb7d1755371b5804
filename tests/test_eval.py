"""eval.py: metrics on hand-checkable cases, the synth benchmark, the command line."""

import json

import torch

from eval import format_table, recall_at

from conftest import run_cli


def test_recall_counts_a_hit_for_any_item_with_the_same_caption_text():
    captions = ["a red circle", "a blue square", "a red circle"]
    similarity = torch.tensor([[0.1, 0.9, 0.8],   # top-1 is item 1 (other text): miss at 1, hit at 2
                               [0.2, 0.1, 0.9],   # top-1 is item 2 (other text): miss
                               [0.9, 0.1, 0.2]])  # top-1 is item 0, same text: hit
    assert recall_at(similarity, captions, captions, 1) == 1 / 3
    assert recall_at(similarity, captions, captions, 2) == 2 / 3


def test_format_table_aligns_rows():
    table = format_table({"clip": {"a": 0.5, "b": 1.0}, "semclip": {"a": 0.25, "b": 0.0}}, ["a", "b"])
    assert table.splitlines()[1] == "clip      0.500   1.000" and len({len(l) for l in table.splitlines()}) == 1


def test_eval_cli_synth_writes_results_json(synth_dir, tmp_path):
    trained = run_cli("train.py", "--data", synth_dir / "train.jsonl", "--batch-size", "16", "--steps", "1",
                      "--workers", "0", "--device", "cpu", "--out", tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_cli("eval.py", "--bench", "synth", "--ckpt", tmp_path / "ckpt.pt", "--data-root", synth_dir,
                     "--out", tmp_path / "results.json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["bench"] == "synth" and results["n"] == 40 and results["checkpoint"].endswith("ckpt.pt")
    names = ["orig_over_neg", "t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "para_t2i_r1", "zeroshot_orig", "zeroshot_neg"]
    assert list(results["metrics"]) == names
    assert all(0.0 <= value <= 1.0 for value in results["metrics"].values())


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run_cli("eval.py", "--bench", "synth", "--ckpt", tmp_path / "none.pt")
    assert result.returncode == 1 and "checkpoint does not exist" in result.stderr
    assert "Traceback" not in result.stderr
