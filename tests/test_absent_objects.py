"""
absent_objects.py: an object is "surely absent" only when the image's labels and its caption rule
it out (plurals and synonyms included); plausible ones are preferred; a sentence counts as a true
negation only when it denies that object, denies nothing else and keeps the caption.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import absent_objects  # noqa: E402
from absent_objects import AbsentObjects, denial_problem, mentions, proposal_problem  # noqa: E402
from errors import DataError  # noqa: E402


def test_the_shipped_vocabulary_is_cocos_80_categories():
    vocab = absent_objects.read_vocab(absent_objects.COCO_CATEGORIES)
    assert len(vocab) == 80 and len(set(vocab)) == 80
    assert vocab[0] == "person" and vocab[-1] == "toothbrush" and "hot dog" in vocab


@pytest.mark.parametrize("caption, name", [
    ("two dogs on a sofa", "dog"),
    ("three buses in the rain", "bus"),
    ("a man on skis", "skis"),
    ("a ski slope", "skis"),
    ("two knives on a board", "knife"),
    ("people on a beach", "person"),
    ("a cat on a sofa", "couch"),
    ("a puppy asleep", "dog"),
    ("a dog in the park", "hot dog"),
    ("a wooden table", "dining table"),
    ("the dog isn't here", "dog"),
])
def test_a_caption_names_an_object_by_plural_synonym_or_a_word_of_its_name(caption, name):
    assert mentions(caption, name)


@pytest.mark.parametrize("caption, name", [
    ("a dog on a sofa", "cat"),
    ("a cathedral at night", "cat"),
    ("a red bus", "car"),
])
def test_other_words_do_not_name_it(caption, name):
    assert not mentions(caption, name)


def picker(labels, vocab=("dog", "cat", "fork", "knife", "car", "bus")):
    return AbsentObjects(list(vocab), {key: None if found is None else frozenset(found)
                                       for key, found in labels.items()}, seed=0)


def test_the_pick_is_neither_a_label_nor_named_by_the_caption():
    labels = {str(number): {"dog", "car"} for number in range(50)}
    absent = picker(labels)
    for number in range(50):
        source, name = absent.pick({"id": number, "caption": "a dog next to a bus"})
        assert source == "labels" and name in {"cat", "fork", "knife"}


def test_objects_that_co_occur_with_the_labels_are_preferred():
    kitchens = {f"kitchen{number}": {"fork", "knife"} for number in range(20)}
    streets = {f"street{number}": {"car", "bus"} for number in range(20)}
    forks = {f"fork{number}": {"fork"} for number in range(20)}
    absent = picker({**kitchens, **streets, **forks})
    assert {absent.pick({"id": f"fork{number}", "caption": "a fork"}) for number in range(20)} == {("labels", "knife")}


def test_an_image_whose_labels_were_never_seen_with_others_gets_any_candidate():
    absent = picker({f"dog{number}": {"dog"} for number in range(20)})
    picks = {absent.pick({"id": f"dog{number}", "caption": "a dog"})[1] for number in range(20)}
    assert len(picks) > 1 and picks <= {"cat", "fork", "knife", "car", "bus"}


def test_the_pick_depends_only_on_the_record_and_the_seed():
    labels = {str(number): {"fork"} for number in range(5)} | {"a": {"fork", "knife"}, "b": {"fork", "dog"}}
    first, again = picker(labels), picker(labels)
    assert [first.pick({"id": n, "caption": "x"}) for n in range(5)] == [again.pick({"id": n, "caption": "x"})
                                                                          for n in range(5)]


def test_an_unlabelled_image_leaves_the_object_to_the_caption_and_a_full_one_has_none():
    absent = picker({"u": None, "f": {"dog", "cat", "fork", "knife", "car"}})
    assert absent.pick({"id": "u", "caption": "a dog"}) == ("caption", None)
    assert absent.pick({"id": "f", "caption": "a bus"}) == ("labels", None)


def test_coco_instances_label_images_by_file_name(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}],
        "images": [{"id": 7, "file_name": "000007.jpg"}, {"id": 9, "file_name": "000009.jpg"}],
        "annotations": [{"image_id": 7, "category_id": 18}, {"image_id": 7, "category_id": 1}]}))
    vocab, labels = absent_objects.read_coco_instances(path)
    assert vocab == ["person", "dog", "chair"]
    assert labels == {"000007.jpg": {"dog", "person"}, "000009.jpg": set()}
    records = [{"id": 1, "image": "train2017/000007.jpg", "caption": "c"}, {"id": 2, "image": "000009.jpg"}]
    assert absent_objects.image_labels(records, {}, labels, path) == {"1": {"dog", "person"}, "2": frozenset()}
    with pytest.raises(DataError, match=r"captions.jsonl: line 3: image 000005.jpg is not in .*instances.json"):
        absent_objects.image_labels([{"id": 3, "image": "000005.jpg"}], {"3": "captions.jsonl: line 3"}, labels, path)


@pytest.mark.parametrize("content, message", [
    ("{}", "not a COCO instances file"),
    ("[1, 2]", "not a COCO instances file"),
    ('{"categories": [], "images": [], "annotations": [{"image_id": 1, "category_id": 1}]}', "KeyError"),
])
def test_a_file_that_is_not_coco_instances_is_one_clear_error(tmp_path, content, message):
    (tmp_path / "i.json").write_text(content)
    with pytest.raises(DataError, match=message):
        absent_objects.read_coco_instances(tmp_path / "i.json")


def test_an_empty_vocabulary_is_one_clear_error(tmp_path):
    (tmp_path / "v.txt").write_text("# none\n\n")
    with pytest.raises(DataError, match="v.txt: no object names in it"):
        absent_objects.read_vocab(tmp_path / "v.txt")


CAPTION = "A brown dog sleeps on a red mat"


@pytest.mark.parametrize("sentence", [
    "A brown dog sleeps on a red mat, and there is no cat.",
    "A brown dog sleeps on a red mat without any cats around.",
    "There isn't a cat: a brown dog sleeps on a red mat.",
])
def test_a_true_negation_denies_the_absent_object_and_keeps_the_caption(sentence):
    assert denial_problem(sentence, CAPTION, "cat") is None


@pytest.mark.parametrize("sentence, problem", [
    ("A brown dog sleeps on a red mat.", "does not name"),
    ("A brown dog sleeps on a red mat next to a cat.", "does not deny"),
    ("A brown dog sleeps without a mat, and there is no cat.", "denies more than"),
    ("There is no cat here.", "keeps 0 of the caption's 5 content words"),
])
def test_a_sentence_that_is_no_true_negation_is_named(sentence, problem):
    assert problem in denial_problem(sentence, CAPTION, "cat")


@pytest.mark.parametrize("proposal, problem", [
    ("mat", "is named by the caption"),
    ("puppy", "is named by the caption"),
    ("a big red flying kite", "more than three words"),
    ("3 cats!", "not an object name"),
    (["cat"], "not an object name"),
])
def test_a_proposed_absent_object_is_checked(proposal, problem):
    assert problem in proposal_problem(proposal, CAPTION)


@pytest.mark.parametrize("proposal", ["cat", "Cat", "a cat", "the  teddy bear"])
def test_a_plausible_proposal_passes_and_is_named_plainly(proposal):
    assert proposal_problem(proposal, CAPTION) is None
    assert absent_objects.normal_name(proposal) in {"cat", "teddy bear"}
