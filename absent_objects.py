"""
Which object is surely ABSENT from an image, and does a sentence deny exactly it: the ground of
the true negations ("a dog on a sofa, and there is no cat") that L_truth trains on.

NegBench (Alhamoud et al., CVPR 2025) builds such captions at scale: an LLM proposes objects a
scene could contain, an open-vocabulary detector (OWL-ViT) confirms they are not in the image,
and the LLM writes the negated caption. This project ships no detector; the proof of absence is
the image's object labels (COCO's 80 instance categories, LVIS, Open Images): an object of the
label vocabulary that is neither among the labels nor named by the caption. Among those, objects
that co-occur with the image's labels elsewhere in the data are preferred: "no fork" for a
kitchen, as plausible, hence as hard, as NegBench's. Without labels gen_triplets.py lets the LLM
propose the object, and nothing checks the picture (docs/gen-triplets.md says what that costs).

Words match with simple plurals and a few synonyms ("sofa" names a couch), so "the caption
names it" errs on the safe side. Standard library only, like gen_triplets.py.
"""

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from errors import DataError

COCO_CATEGORIES = Path(__file__).resolve().parent / "assets" / "coco_categories.txt"
# Other words a caption uses for a COCO category: any of them in the caption (or the labels) rules it out
SYNONYMS = {
    "person": "people man men woman women boy girl child children kid baby guy lady player someone skier surfer",
    "bicycle": "bike cyclist", "motorcycle": "motorbike bike scooter moped", "airplane": "plane jet aircraft airliner",
    "car": "taxi suv", "truck": "lorry pickup", "boat": "ship canoe kayak sailboat yacht", "train": "locomotive tram",
    "traffic light": "stoplight", "fire hydrant": "hydrant", "bird": "pigeon seagull gull duck goose parrot",
    "cat": "kitten kitty", "dog": "puppy pup", "horse": "pony foal", "cow": "cattle calf bull", "sheep": "lamb",
    "handbag": "purse bag", "backpack": "bag knapsack", "suitcase": "luggage bag", "tie": "necktie",
    "frisbee": "disc", "skis": "ski skier skiing", "snowboard": "snowboarder snowboarding",
    "sports ball": "ball football soccer basketball volleyball", "baseball bat": "bat", "baseball glove": "mitt",
    "skateboard": "skateboarder skater skateboarding board", "surfboard": "surfer surfing board",
    "tennis racket": "racquet tennis", "cup": "mug", "sandwich": "burger hamburger sub", "hot dog": "hotdog",
    "donut": "doughnut", "couch": "sofa loveseat", "potted plant": "plant houseplant", "dining table": "table",
    "tv": "television", "laptop": "computer notebook", "cell phone": "phone cellphone smartphone",
    "remote": "controller", "oven": "stove", "refrigerator": "fridge", "hair drier": "hairdryer dryer drier",
}
NEGATION_WORDS = {"no", "not", "without", "nor", "none", "never", "neither", "nothing", "nobody"}
STOP_WORDS = {"a", "an", "the", "of", "on", "in", "at", "to", "and", "with", "is", "are", "it", "its", "there",
              "this", "that", "some", "by", "for", "from", "as", "while", "near", "next", "up", "down", "into"}
PLAUSIBLE_CHOICES = 5  # draw among the absent objects that co-occur most with the image's labels
KEEP_SHARE = 0.5  # a true negation keeps at least this share of the caption's content words
IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
                     "knife": "knives", "foot": "feet", "tooth": "teeth", "goose": "geese"}


# -----------------------------------------------------------------------------
# Words: what a text names, with simple plurals

def words(text):
    """Lower-case words; "isn't" counts as "is not"."""
    return re.findall(r"\w+", text.lower().replace("n't", " not"))


def word_forms(word):
    """The word with its simple plural or singular forms: dog/dogs, bus/buses, skis/ski, knife/knives."""
    forms = {word, word + "s", word + "es", IRREGULAR_PLURALS.get(word, word)}
    forms |= {singular for singular, plural in IRREGULAR_PLURALS.items() if plural == word}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("s"):
        forms |= {word[:-1], word[:-2] if word.endswith("es") else word}
    return forms


SAME_THING = [{name, *others.split()} for name, others in SYNONYMS.items()]


def names_of(name):
    """The object's name and every word of a synonym group it belongs to ("puppy": dog, pup)."""
    return {name}.union(*(group for group in SAME_THING if name in group))


def mentions(text, name):
    """Whether the text names the object, or any word of its name or synonyms ("dog" rules out "hot dog")."""
    said = set(words(text))
    return any(word_forms(word) & said for other in names_of(name) for word in words(other))


def normal_name(name):
    """Lower case, single spaces, no leading article: "A  Dog" is "dog"."""
    return re.sub(r"^(a|an|the) ", "", " ".join(name.lower().split()))


# -----------------------------------------------------------------------------
# Labels: the image's objects, from the caption record's "objects" or a COCO instances file

def read_vocab(path):
    """Object names, one a line (blank lines and # comments skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read it as UTF-8 text ({error}); check --vocab") from None
    vocab = list(dict.fromkeys(normal_name(line) for line in lines if line.strip() and not line.startswith("#")))
    if not vocab:
        raise DataError(f"{path}: no object names in it; --vocab wants one name a line")
    return vocab


def read_coco_instances(path):
    """(the category names, {image file name: the names of its annotated categories}) of a COCO
    instances_*.json. An image without annotations is labelled with nothing: every category is absent."""
    try:
        data = json.loads(Path(path).read_bytes())
        categories = {category["id"]: normal_name(category["name"]) for category in data["categories"]}
        images = {image["id"]: image["file_name"] for image in data["images"]}
        labels = {name: set() for name in images.values()}
        for annotation in data["annotations"]:
            labels[images[annotation["image_id"]]].add(categories[annotation["category_id"]])
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror}); check --coco-instances") from None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a COCO instances file ({type(error).__name__}: {error}); "
                        "--coco-instances wants annotations/instances_<split>.json") from None
    return list(dict.fromkeys(categories.values())), labels


def image_labels(records, where, coco_labels=None, coco_path=None):
    """{id: the image's labels, or None when it has none}: the record's "objects" list, or with a
    COCO instances table the categories of the image of that file name. where: {id: "file: line N"}."""
    labels = {}
    for record in records:
        if coco_labels is not None:
            name = Path(record["image"]).name
            if name not in coco_labels:
                raise DataError(f"{where[str(record['id'])]}: image {name} is not in {coco_path}; pass the instances "
                                "file of the split the captions come from")
            found = coco_labels[name]
        else:
            found = record.get("objects")
        labels[str(record["id"])] = None if found is None else frozenset(map(normal_name, found))
    return labels


# -----------------------------------------------------------------------------
# The pick: absent for sure, plausible for the scene

class AbsentObjects:
    """Per image, an object its labels rule out and its caption does not name; co-occurrence
    counts over every labelled image of the input make the plausible ones likelier."""

    def __init__(self, vocab, labels, seed=0):
        self.vocab, self.labels, self.seed = vocab, labels, seed
        self.count, self.together = Counter(), defaultdict(Counter)
        for found in labels.values():
            for label in found or ():
                self.count[label] += 1
                self.together[label].update(found - {label})
        self.images = sum(found is not None for found in labels.values())

    def candidates(self, labels, caption):
        return [name for name in self.vocab if not names_of(name) & labels and not mentions(caption, name)]

    def pick(self, record):
        """("labels", object) for a labelled image, ("labels", None) when every object of the vocabulary
        is ruled out, ("caption", None) without labels. Depends only on the record, its id and the seed,
        so a resumed run picks the same."""
        labels = self.labels[str(record["id"])]
        if labels is None:
            return "caption", None
        candidates = self.candidates(labels, record["caption"])
        if not candidates:
            return "labels", None
        if labels:  # how often the candidate appears with each of the image's labels: P(candidate | label)
            score = {name: sum(self.together[label][name] / self.count[label] for label in labels if self.count[label])
                     for name in candidates}
        else:
            score = {name: self.count[name] / max(self.images, 1) for name in candidates}
        plausible = sorted((name for name in candidates if score[name] > 0), key=lambda name: -score[name])
        plausible = plausible[:PLAUSIBLE_CHOICES]
        draw = random.Random(f"{self.seed}:{record['id']}")
        if not plausible:
            return "labels", draw.choice(candidates)
        return "labels", draw.choices(plausible, weights=[score[name] for name in plausible])[0]


def for_captions(records, input_path, line_of, coco_path=None, vocab_path=None, seed=0):
    """The AbsentObjects of caption records (line_of: {id: line in input_path}): labels from a COCO instances
    file or each record's "objects"; the vocabulary from --vocab, else the instances file's categories,
    else COCO's 80 (assets/)."""
    coco_vocab, coco_labels = read_coco_instances(coco_path) if coco_path else (None, None)
    vocab = read_vocab(vocab_path) if vocab_path else coco_vocab or read_vocab(COCO_CATEGORIES)
    where = {key: f"{input_path}: line {line}" for key, line in line_of.items()}
    return AbsentObjects(vocab, image_labels(records, where, coco_labels, coco_path), seed)


# -----------------------------------------------------------------------------
# The sentence: does it deny that object, and only that, and keep the caption?

def denial_problem(sentence, caption, absent_object):
    """What is wrong with a true negation, or None: it must deny the absent object (a negation word
    just before its name), deny nothing else and keep most of the caption's content words."""
    said = words(sentence)
    heads = {form for name in names_of(absent_object) for form in word_forms(words(name)[-1])}
    window = len(words(absent_object)) + 3
    places = [index for index, word in enumerate(said) if word in heads]
    if not places:
        return f"true_negation does not name the absent object {absent_object!r}"
    if not any(NEGATION_WORDS & set(said[max(0, index - window):index]) for index in places):
        return f"true_negation does not deny {absent_object!r} (no negation word just before it)"
    if sum(word in NEGATION_WORDS for word in said) > sum(word in NEGATION_WORDS for word in words(caption)) + 1:
        return "true_negation denies more than the absent object"
    content = {word for word in words(caption) if word not in STOP_WORDS | NEGATION_WORDS}
    kept = {word for word in content if word_forms(word) & set(said)}
    if len(kept) < KEEP_SHARE * len(content):
        return f"true_negation keeps {len(kept)} of the caption's {len(content)} content words"
    return None


def proposal_problem(absent_object, caption):
    """What is wrong with an object the LLM proposes as absent (caption-only source), or None."""
    if not isinstance(absent_object, str) or not re.fullmatch(r"[a-z][a-z -]*", normal_name(absent_object)):
        return f"absent_object is not an object name: {str(absent_object)[:60]!r}"
    if len(words(absent_object)) > 3:
        return f"absent_object has more than three words: {absent_object[:60]!r}"
    if mentions(caption, normal_name(absent_object)):
        return f"absent_object {absent_object!r} is named by the caption"
    return None
