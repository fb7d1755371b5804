"""bench/gpu_check.sh: the GPU check runs in CI too (--tiny, the Triton interpreter), so it cannot rot.

Every row must PASS or SKIP, and on a machine without CUDA the rows the CPU can answer (the
fp32 and fp16 kernels against float64, impl="auto", a gloo process group, training, resuming,
evaluating) must PASS; only the rows that need a GPU may SKIP.
"""

import os
import subprocess

import pytest
import torch

from conftest import ROOT

CPU_ANSWERS = ("parity fp32", "parity fp16", "auto fp16", "auto fp32", "auto on CPU", "process group", "train",
               "resume", "eval")


def table_rows(text):
    """{check: result} of the table's rows (not its header, not its separator)."""
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): cells[1].strip() for cells in rows[1:]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "table.md"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--tiny", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return done, out


def test_tiny_check_passes_or_skips_every_row(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert len(rows) >= 15 and set(rows.values()) <= {"PASS", "SKIP"}, rows
    assert out.read_text() in done.stdout  # the same table, also in the file
    if not torch.cuda.is_available():
        for prefix in CPU_ANSWERS:
            results = [result for check, result in rows.items() if check.startswith(prefix)]
            assert results and set(results) == {"PASS"}, (prefix, rows)
        assert "no CUDA" in out.read_text().splitlines()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the full check runs where there is CUDA")
def test_full_check_without_cuda_is_one_line():
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "--tiny" in done.stderr
