"""synth.py: the built-in world is a function of its seed; negations negate a present object."""

import numpy as np

from synth import COLOURS, SHAPES, main, synth_example, write_synth

from conftest import help_examples, run_python


def test_synthetic_world_is_reproducible_from_its_seed(tmp_path):
    first = write_synth(tmp_path / "a", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    second = write_synth(tmp_path / "b", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    assert (first / "train.jsonl").read_text() == (second / "train.jsonl").read_text()
    assert (first / "images/train_000004.png").read_bytes() == (second / "images/train_000004.png").read_bytes()


def test_negations_keep_every_content_word_and_negate_a_present_object():
    rng = np.random.default_rng(0)
    negation_words = {"no", "not", "without", "but", "there", "is", "and", "a"}
    for _ in range(300):
        _, caption, paraphrase, negation, objects = synth_example(rng)
        words = lambda text: set(text.replace(",", " ").split()) - negation_words  # noqa: E731
        assert words(caption) == words(negation) == words(paraphrase) - {"an", "image", "of", "photo", "this",
                                                                           "picture", "shows"}
        assert any(f"no {o}" in negation or f"not a {o}" in negation or f"without a {o}" in negation
                   for o in objects)
        assert all(o.split()[0] in COLOURS and o.split()[1] in SHAPES for o in objects)


def test_cli_writes_the_world_and_data_py_synth_is_the_same_command(tmp_path):
    for script, folder in ((["synth.py"], "a"), (["data.py", "synth"], "b")):
        result = run_python(*script, "--out", tmp_path / folder, "--n-train", "3", "--n-test", "2", "--seed", "4")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a/train.jsonl").read_text() == (tmp_path / "b/train.jsonl").read_text()
    assert len((tmp_path / "a/test.jsonl").read_text().splitlines()) == 2


def test_help_examples_parse(monkeypatch):
    result = run_python("synth.py", "--help")
    examples = help_examples(result.stdout, "synth.py")
    assert result.returncode == 0 and len(examples) >= 2
    written = []
    monkeypatch.setattr("synth.write_synth", lambda *args: written.append(args))
    for argv in examples:
        main(argv)
    assert len(written) == len(examples)
