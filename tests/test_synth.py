"""synth.py: the built-in world is a function of its seed; negations negate a present object; true
negations an absent one; paraphrases speak in synonyms; the test split and its probes never depend
on --true-negations."""

import json
import re

import numpy as np
import pytest

from errors import DataError
from synth import (COLOURS, MCQ_KINDS, NEGATION_FORMS, NEGATION_LINKERS, SHAPES, SYNONYMS, checked_world, main,
                   negation_probes, synonymize, synth_classes, synth_example, world_dir, world_settings, write_synth)

from conftest import help_examples, run_python

WORDS = {synonym: word for word, synonym in SYNONYMS.items()}


def read(folder, split="train"):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def is_true(text, objects):
    """An independent reader of the world's language: a text is true of an image showing `objects`
    when every object it affirms is there and every object it negates ("no", "not a", "without a"
    right before it) is not. Synonyms read as their plain words; distractors (", no filter") name
    no object and so never count."""
    words = [WORDS.get(w, w) for w in re.findall(r"[a-z]+", text)]
    for i in range(len(words) - 1):
        if words[i] in COLOURS and words[i + 1] in SHAPES:
            negated = words[i - 1] == "no" or words[i - 2:i] in (["not", "a"], ["without", "a"])
            if (f"{words[i]} {words[i + 1]}" in objects) == negated:
                return False
    return True


def test_synthetic_world_is_reproducible_from_its_seed(tmp_path):
    first = write_synth(tmp_path / "a", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    second = write_synth(tmp_path / "b", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    assert (first / "train.jsonl").read_text() == (second / "train.jsonl").read_text()
    assert (first / "images/train_000004.png").read_bytes() == (second / "images/train_000004.png").read_bytes()
    assert world_settings(first) == {"version": 4, "seed": 9, "n_train": 5, "n_test": 2, "n_web": 0,
                                     "true_negations": 0.0, "negation_heldout": 0, "heldout_classes": [],
                                     "reword_negations": False}


def test_negations_keep_every_content_word_and_negate_a_present_object():
    rng = np.random.default_rng(0)
    for _ in range(300):
        _, texts, objects = synth_example(rng)
        content = lambda text: sorted(WORDS.get(w, w) for w in re.findall(r"[a-z]+", text)  # noqa: E731
                                      if WORDS.get(w, w) in COLOURS or WORDS.get(w, w) in SHAPES)
        assert content(texts["caption"]) == content(texts["negation"]) == content(texts["paraphrase"])
        assert is_true(texts["caption"], objects) and is_true(texts["paraphrase"], objects)
        assert not is_true(texts["negation"], objects) and is_true(texts["true_negation"], objects)
        assert all(o.split()[0] in COLOURS and o.split()[1] in SHAPES for o in objects)


def test_synonymize_swaps_whole_colour_and_shape_words_only():
    assert synonymize("a red circle, a blue square and no white cross, no filter", 1.0) == \
        "a crimson disc, a navy box and no snowy plus, no filter"
    assert synonymize("a red circle", 0.0) == "a red circle"


def test_paraphrases_speak_in_synonyms_that_captions_almost_never_use():
    rng = np.random.default_rng(1)
    texts = [synth_example(rng)[1] for _ in range(1000)]
    uses_synonyms = lambda text: any(w in WORDS for w in re.findall(r"[a-z]+", text))  # noqa: E731
    assert sum(map(uses_synonyms, (t["caption"] for t in texts))) / 1000 < 0.05   # measured 0.043 at seed 0
    assert sum(map(uses_synonyms, (t["paraphrase"] for t in texts))) / 1000 > 0.9


def test_true_negations_negate_an_absent_object_in_training_captions_only(tmp_path):
    plain = write_synth(tmp_path / "p0", n_train=6, n_test=4, seed=2, log=lambda *_: None)
    every = write_synth(tmp_path / "p1", n_train=12, n_test=4, seed=2, true_negations=1.0, log=lambda *_: None)
    # the held-out split does not depend on n_train or true_negations: same texts, same pixels
    assert (plain / "test.jsonl").read_text() == (every / "test.jsonl").read_text()
    assert (plain / "images/test_000003.png").read_bytes() == (every / "images/test_000003.png").read_bytes()
    # training images are the same too; only their texts change
    assert (plain / "images/train_000005.png").read_bytes() == (every / "images/train_000005.png").read_bytes()
    for before, after in zip(read(plain), read(every)):
        # each record's true negation, whatever P is: alone ("there is no Y"), in place, first
        # ("no Y, X"), or after the list ("X but no Y"); with P = 1 it is the caption
        assert after["caption"] == after["true_negation"] == before["true_negation"]
        alone = re.fullmatch(r"(no|there is no|not a) [a-z]+ [a-z]+(, [a-z ]+)?", after["caption"])
        first = after["caption"].startswith("no ") and after["caption"].endswith(before["caption"])
        listed = re.sub(r", (no filter|not edited|without flash)$", "", before["caption"])
        last = re.fullmatch(re.escape(listed) + r" (but no|without a|and not a) [a-z]+ [a-z]+(, [a-z ]+)?",
                            after["caption"])
        assert alone or first or last, (before, after)
        assert is_true(after["caption"], after["objects"]) and is_true(after["paraphrase"], after["objects"])
        assert not is_true(after["negation"], after["objects"])
    assert not any(re.search(r"(but no|without a|and not a) ", r["caption"]) for r in read(plain))
    assert len({r["caption"].split()[1] in COLOURS for r in read(every)}) == 2  # alone or not
    with pytest.raises(Exception, match="fraction"):
        write_synth(tmp_path / "bad", n_train=1, n_test=1, true_negations=1.5)


def test_reworded_negations_change_only_the_true_negations_paraphrases_into_another_form(tmp_path):
    quiet = lambda *_: None  # noqa: E731
    same = write_synth(tmp_path / "same", n_train=60, n_test=4, seed=3, true_negations=1.0, log=quiet)
    reworded = write_synth(tmp_path / "r", n_train=60, n_test=4, seed=3, true_negations=1.0, reword_negations=True,
                           log=quiet)
    forms = sorted({f.replace(" {}", "") for f in NEGATION_FORMS} | set(NEGATION_LINKERS), key=len, reverse=True)
    form = lambda text: next((f for f in forms if re.search(rf"(^| ){f} [a-z]+ [a-z]+", text)), None)  # noqa: E731
    changed = 0
    for before, after in zip(read(same), read(reworded)):
        assert {k: v for k, v in before.items() if k != "paraphrase"} == {k: v for k, v in after.items()
                                                                          if k != "paraphrase"}
        assert is_true(after["paraphrase"], after["objects"])
        if before["paraphrase"] != after["paraphrase"]:
            changed += 1
            assert form(after["paraphrase"]) not in (None, form(before["paraphrase"])), (before, after)
        else:  # "no Y, X" first: kept, so no paraphrase starts "there is not a" (an unseen form)
            assert after["caption"].startswith("no ")
    assert changed > 30
    assert (same / "images/train_000007.png").read_bytes() == (reworded / "images/train_000007.png").read_bytes()
    assert world_settings(reworded)["reword_negations"] is True
    assert world_dir(tmp_path / "w", 0.5, 0, True).name == "w-true-neg0.5-reworded"
    with pytest.raises(DataError, match="--reword-negations"):
        checked_world(tmp_path / "same", reword_negations=True)


@pytest.mark.parametrize("kind", MCQ_KINDS)
def test_probes_ask_questions_with_exactly_one_true_caption(kind):
    rng = np.random.default_rng(3)
    for _ in range(200):
        _, _, objects = synth_example(rng)
        probe = negation_probes(objects, kind, rng)
        for key in ("choices", "unseen_choices"):
            truth = [is_true(text, objects) for text in probe[key]]
            assert truth.count(True) == 1 and truth[probe["answer"]], (objects, probe[key])
        assert is_true(probe["true_negation"], objects) and " but no " in probe["true_negation"]
        assert not is_true(probe["false_affirmation"], objects) and not is_true(probe["false_negation"], objects)


def test_probes_use_no_word_the_world_does_not_use():
    rng = np.random.default_rng(4)
    world = set()
    for _ in range(2000):
        _, texts, _ = synth_example(rng, true_negation_rate=0.5)
        world |= {w for text in texts.values() for w in re.findall(r"[a-z]+", text)}
    probes = [negation_probes(synth_example(rng)[2], kind, rng) for kind in MCQ_KINDS * 100]
    used = {w for p in probes for key in ("choices", "unseen_choices") for text in p[key]
            for w in re.findall(r"[a-z]+", text)}
    assert used <= world, used - world


def test_cli_writes_the_world_and_data_py_synth_is_the_same_command(tmp_path):
    for script, folder in ((["synth.py"], "a"), (["data.py", "synth"], "b")):
        result = run_python(*script, "--out", tmp_path / folder, "--n-train", "3", "--n-test", "2", "--seed", "4",
                            "--true-negations", "0.5")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a/train.jsonl").read_text() == (tmp_path / "b/train.jsonl").read_text()
    assert len((tmp_path / "a/test.jsonl").read_text().splitlines()) == 2
    assert world_settings(tmp_path / "a")["true_negations"] == 0.5
    bad = run_python("synth.py", "--out", tmp_path / "c", "--true-negations", "2")
    assert bad.returncode == 2 and "argument --true-negations: 2 is not <= 1" in bad.stderr
    for flags in (("--n-train", "0"), ("--n-web", "-1"), ("--negation-heldout", "25"), ("--reword-negations",)):
        bad = run_python("synth.py", "--out", tmp_path / "c", *flags)
        assert bad.returncode == 2 and f"argument {flags[0]}" in bad.stderr and "Traceback" not in bad.stderr


def test_help_examples_parse(monkeypatch):
    result = run_python("synth.py", "--help")
    examples = help_examples(result.stdout, "synth.py")
    assert result.returncode == 0 and len(examples) >= 2
    written = []
    monkeypatch.setattr("synth.write_synth", lambda *args: written.append(args))
    for argv in examples:
        main(argv)
    assert len(written) == len(examples)


def test_the_web_split_shares_no_image_with_the_triplets_and_leaves_the_other_splits_as_they_were(tmp_path):
    plain = write_synth(tmp_path / "plain", n_train=6, n_test=4, seed=2, log=lambda *_: None)
    web = write_synth(tmp_path / "web", n_train=6, n_test=4, n_web=5, seed=2, log=lambda *_: None)
    for split in ("train", "test"):
        assert (plain / f"{split}.jsonl").read_text() == (web / f"{split}.jsonl").read_text()
    images = [json.loads(line)["image"] for line in (web / "web.jsonl").read_text().splitlines()]
    assert len(images) == 5 and all(name.startswith("images/web_") for name in images)
    assert not (plain / "web.jsonl").exists()


def test_held_out_classes_are_never_negated_in_training_but_still_affirmed(tmp_path):
    world = write_synth(tmp_path / "w", n_train=400, n_test=50, seed=4, negation_heldout=4, true_negations=0.5,
                        log=lambda *_: None)
    heldout = world_settings(world)["heldout_classes"]
    assert len(heldout) == 4 and set(heldout) <= set(synth_classes())
    records = [json.loads(line) for line in (world / "train.jsonl").read_text().splitlines()]
    negated = [name for r in records for name in heldout
               if re.search(rf"(no|not a|without a) {name}\b", r["negation"] + " " + r["true_negation"])]
    assert negated == []
    assert any(name in r["caption"] and name in r["objects"] for r in records for name in heldout)
    paper = write_synth(tmp_path / "p", n_train=400, n_test=50, seed=4, log=lambda *_: None)
    assert (paper / "test.jsonl").read_text() == (world / "test.jsonl").read_text()
