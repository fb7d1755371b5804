"""Shared fixtures: a small synthetic world and a way to run the command lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import write_synth  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A 96-train / 40-test synthetic world, written once per test session."""
    return write_synth(tmp_path_factory.mktemp("synth"), n_train=96, n_test=40, seed=3, log=lambda *_: None)


def run_cli(*args, cwd=None):
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
