"""Shared fixtures: a small synthetic world and a way to run the command lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The official SugarCrepe++ files (MIT; see tests/data/README.md), shipped so the suite stands alone
SUGARCREPE_PP = ROOT / "tests" / "data" / "sugarcrepe_pp"
sys.path.insert(0, str(ROOT))

from synth import write_synth  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A 96-train / 40-test synthetic world with a 128-image web split, written once per test session."""
    return write_synth(tmp_path_factory.mktemp("synth"), n_train=96, n_test=40, n_web=128, seed=3, log=lambda *_: None)


@pytest.fixture(scope="session")
def open_clip():
    return pytest.importorskip("open_clip", reason="open_clip_torch is the reference implementation; "
                               "pip install -r bench/requirements.txt")


def run_python(*args, cwd=None):
    """Run `python <args>` from the repository root; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A randomly initialised `tiny` model saved as train.py saves it (eval metrics hold for any weights)."""
    import torch
    from dataclasses import asdict
    from model import CLIP, ModelConfig
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    torch.save({"model_config": asdict(config), "tokenizer": "cl100k_base", "model": CLIP(config).state_dict()}, path)
    return path


def commands(text: str, script: str) -> list:
    """The argument lists of the `python SCRIPT ...` / `torchrun ... SCRIPT ...` command lines in `text`
    (continuation lines joined, trailing comments dropped)."""
    examples = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split("#")[0].split()
        if script in words:
            examples.append(words[words.index(script) + 1:])
    return examples


def help_examples(help_text: str, script: str) -> list:
    """The commands of SCRIPT under "examples:" in a --help text."""
    return commands(help_text.split("examples:", 1)[1], script)
