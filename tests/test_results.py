"""results.py: the pages' tables are their results files, rendered; a changed number fails until re-rendered."""

import json
import re
import shlex
import subprocess
import sys

import pytest

import results
from conftest import ROOT, run_python

PAGE = """# A page

<!-- results: main
label `--loss`
metrics orig_over_neg t2i_r1
row `clip` results/clip_s*/results.json
row "semclip 600" results/semclip/results.json
-->
<!-- /results -->
"""


def write_run(path, metrics, seed, command="python train.py", threads=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": "synth", "checkpoint": "ckpt.pt", "n": 10, "metrics": metrics,
                                "provenance": {"command": command, "seed": seed, "threads": threads,
                                               "commit": "abc1234"}}))


@pytest.fixture
def checkout(tmp_path):
    """A small repository copy: README.md with one table, three seeds of `clip`, one `semclip` run."""
    for seed, value in enumerate([0.1, 0.2, 0.6]):
        write_run(tmp_path / f"results/clip_s{seed}/results.json", {"orig_over_neg": value, "t2i_r1": 0.5}, seed,
                  command="python bench/ablate.py --steps 300")
    write_run(tmp_path / "results/semclip/results.json", {"orig_over_neg": 0.9876, "t2i_r1": 0.25}, 0, threads=2)
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(PAGE)
    return tmp_path


def results_cli(root, *flags):
    return run_python("results.py", "--root", root, *flags)


def rendered_table(root):
    return [line for line in (root / "README.md").read_text().splitlines() if line.startswith("|")]


def test_the_committed_pages_match_their_results_files():
    result = results_cli(ROOT, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_number_fails_the_check_naming_its_table_until_re_rendered(checkout):
    assert results_cli(checkout).returncode == 0
    assert results_cli(checkout, "--check").returncode == 0
    run = checkout / "results/semclip/results.json"
    run.write_text(run.read_text().replace("0.9876", "0.5"))
    failed = results_cli(checkout, "--check")
    assert failed.returncode == 1 and "README.md: table 'main' differs" in failed.stdout
    assert "| semclip 600 | 0.988 |" in (checkout / "README.md").read_text()  # --check changes nothing
    rendered = results_cli(checkout)
    assert rendered.returncode == 0 and "README.md: table 'main': re-rendered" in rendered.stdout
    assert "| semclip 600 | 0.500 | 0.250 |" in rendered_table(checkout)
    assert results_cli(checkout, "--check").returncode == 0


def test_a_hand_edited_table_fails_the_check(checkout):
    results_cli(checkout)
    page = checkout / "README.md"
    page.write_text(page.read_text().replace("0.988", "0.990"))
    assert results_cli(checkout, "--check").returncode == 1


def test_several_seeds_show_mean_and_sample_std_and_their_count(checkout):
    assert results_cli(checkout).returncode == 0
    # 0.1, 0.2, 0.6: mean 0.3; squared deviations 0.04 + 0.01 + 0.09 = 0.14, over n - 1 = 2: std sqrt(0.07) = 0.2646
    assert rendered_table(checkout) == ["| `--loss` | orig_over_neg | t2i_r1 |",
                                        "| --- | ---: | ---: |",
                                        "| `clip` (3 seeds) | 0.300 ± 0.265 | 0.500 ± 0.000 |",
                                        "| semclip 600 | 0.988 | 0.250 |"]


def test_transpose_puts_metrics_down_and_rows_across(checkout):
    page = checkout / "README.md"
    page.write_text(PAGE.replace("label `--loss`", "transpose"))
    assert results_cli(checkout).returncode == 0
    assert rendered_table(checkout)[0] == "| metric | `clip` (3 seeds) | semclip 600 |"
    assert rendered_table(checkout)[2] == "| orig_over_neg | 0.300 ± 0.265 | 0.988 |"


def test_the_line_under_the_table_names_commands_seeds_threads_and_commit(checkout):
    results_cli(checkout)
    page = (checkout / "README.md").read_text()
    assert ("Made by `python bench/ablate.py --steps 300` (seeds 0, 1, 2; 1 thread); `python train.py` "
            "(seed 0; 2 threads) at commit abc1234.") in " ".join(page.split())
    assert all(len(line) <= 100 for line in page.splitlines())  # wrapped like the pages' prose


def test_two_files_of_one_row_with_the_same_seed_are_refused(checkout):
    write_run(checkout / "results/clip_s9/results.json", {"orig_over_neg": 0.5, "t2i_r1": 0.5}, 0)
    result = results_cli(checkout, "--check")
    assert result.returncode == 1 and "4 files of one row have seed 0" in result.stderr


@pytest.mark.parametrize("change, message", [
    (("metrics orig_over_neg t2i_r1", "metrics orig_over_neg mcq"),
     "README.md:3: table 'main': results/clip_s0/results.json: mcq: no such metric"),
    (("label `--loss`", "colour red"), "README.md:3: table 'main': line 4: cannot read 'colour red'"),
    (("metrics orig_over_neg t2i_r1", "metrics a b c d e f"), "table 'main': 7 columns, at most 6"),
    (("results/semclip/results.json", "results/nothing/*.json"), "results/nothing/*.json matches no file"),
    (("<!-- /results -->\n", ""), "README.md:3: a `<!-- results:` table without its `<!-- /results -->` line"),
    (("<!-- results: main", "<!-- results:"), "README.md:3: a table needs a name"),
])
def test_a_bad_spec_is_one_line_and_exit_1(checkout, change, message):
    (checkout / "README.md").write_text(PAGE.replace(*change))
    for flags in ((), ("--check",)):
        result = results_cli(checkout, *flags)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_a_results_file_without_provenance_is_refused(checkout):
    run = checkout / "results/semclip/results.json"
    run.write_text(json.dumps({"bench": "synth", "metrics": {"orig_over_neg": 1.0, "t2i_r1": 0.5}}))
    result = results_cli(checkout, "--check")
    assert result.returncode == 1 and "results/semclip/results.json: no \"provenance\"" in result.stderr


def test_provenance_records_command_seed_threads_and_commit():
    import torch
    made = results.provenance(seed=3)
    assert made["command"] == "python " + shlex.join(sys.argv)
    assert made["seed"] == 3 and made["threads"] == torch.get_num_threads()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert re.fullmatch(re.escape(head.stdout.strip()) + r"(\+dirty)?", made["commit"])
    assert {"date", "machine"} <= set(made)


def test_provenance_outside_a_git_checkout_has_no_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "ROOT", tmp_path)
    assert results.provenance()["commit"] is None


def test_eval_write_results_records_the_provenance(tmp_path):
    from eval import write_results
    write_results(tmp_path / "results.json", "synth", "ckpt.pt", 10, {"mcq": 0.5}, seed=7)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["metrics"] == {"mcq": 0.5} and written["seed"] == 7 and written["provenance"]["seed"] == 7


def test_write_bench_results_writes_a_results_file_with_provenance(tmp_path):
    results.write_bench_results(tmp_path / "bench/out.json", "gen_triplets", 480, {"of_ideal": 0.97}, seed=0,
                                examples=[])
    written = json.loads((tmp_path / "bench/out.json").read_text())
    assert {key: written[key] for key in ("bench", "checkpoint", "n", "metrics", "examples")} == {
        "bench": "gen_triplets", "checkpoint": None, "n": 480, "metrics": {"of_ideal": 0.97}, "examples": []}
    assert written["provenance"]["seed"] == 0 and written["provenance"]["command"].startswith("python ")


def test_help_shows_examples():
    result = run_python("results.py", "--help")
    assert result.returncode == 0 and "python results.py --check" in result.stdout
