"""bench/factorial.py: each part's main effect is the mean of the cells with it on minus the mean of
the cells without it, each cell averaged over its seeds first."""

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import factorial  # noqa: E402


def parts_on(cell):
    return set() if cell == "semclip" else set(cell.split("_"))


def test_the_cells_are_the_half_fraction_with_an_even_number_of_parts_on():
    assert len(factorial.CELLS) == 8 and all(len(parts_on(cell)) % 2 == 0 for cell in factorial.CELLS)
    assert len({frozenset(parts_on(cell)) for cell in factorial.CELLS}) == 8


def test_main_effects_of_a_planted_additive_model(tmp_path):
    # mcq = 0.1 + 0.3 T - 0.2 H, plus seed noise that averages out: T's effect 0.3, H's -0.2, P's and F's 0
    for cell in factorial.CELLS:
        (tmp_path / cell).mkdir()
        for seed, noise in enumerate((-0.01, 0.01)):
            value = 0.1 + 0.3 * ("T" in parts_on(cell)) - 0.2 * ("H" in parts_on(cell)) + noise
            newer = {"mcq_unseen_negation": 0.5} if seed else {}  # a metric eval.py added after seed 0 ran
            (tmp_path / cell / f"s{seed}.json").write_text(json.dumps({"metrics": {"mcq": value, **newer}}))
    factorial.main(["--results", str(tmp_path)])
    assert list(json.loads((tmp_path / "effects/T.json").read_text())["metrics"]) == ["mcq"]  # every run has it
    effects = {part: json.loads((tmp_path / "effects" / f"{part}.json").read_text())["metrics"]["mcq"]
               for part in factorial.PARTS}
    assert effects == pytest.approx({"T": 0.3, "P": 0.0, "H": -0.2, "F": 0.0}, abs=1e-12)
