"""Data: tokenizer, image pipeline, triplet readers, the built-in synthetic negation world.

    python data.py synth --out data/synth                 # write the synthetic world
    python data.py synth --out /tmp/w --n-train 2000 --n-test 200 --seed 1

Every reader fails with `DataError("file:line: problem; what to do")`, which the command
lines print as one line before exiting with status 1.
"""

import argparse
import base64
import csv
import functools
import gzip
import hashlib
import html
import json
import math
import sys
import unicodedata
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
import torchvision.io
import torchvision.transforms.v2.functional as TF

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_SYNTH_DIR = Path(__file__).resolve().parent / "data" / "synth"


class DataError(Exception):
    """Bad input: the message names the file, the line, the problem and the fix."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker wrapped it with a traceback."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return last.removeprefix(f"{DataError.__module__}.DataError: ").removeprefix("DataError: ")


def run_cli(main):
    """Run a command line: bad input becomes one line on stderr and exit status 1, never a traceback."""
    try:
        main()
    except DataError as error:
        sys.exit(f"error: {one_line(error)}")
    except KeyboardInterrupt:
        sys.exit("interrupted")


# ----------------------------------------------------------------------------- tokenizer

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"  # pinned by tiktoken
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                  r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


@functools.lru_cache(maxsize=None)
def get_tokenizer(name: str = "cl100k_base"):
    """tiktoken's cl100k_base (or, name="clip", CLIP's BPE) built from assets/, nothing downloaded."""
    if name == "clip":
        return CLIPTokenizer(ASSETS / "bpe_simple_vocab_16e6.txt.gz")
    if name != "cl100k_base":
        raise ValueError(f"unknown tokenizer {name!r}; available: cl100k_base, clip")
    path = ASSETS / "cl100k_base.tiktoken"
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != CL100K_SHA256:
        raise DataError(f"{path}: SHA-256 differs from the one tiktoken pins; restore the file from git")
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in blob.splitlines() if line)}
    return tiktoken.Encoding(name="cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=CL100K_SPECIAL)


def tokenize(texts, context_length: int, tokenizer: str = "cl100k_base") -> torch.Tensor:
    """Token ids [N, context_length]: the text (special-looking text stays plain text), cut so
    that the end-of-text token always fits, then end-of-text, then zero padding. CLIP's tokenizer
    starts each row with <start_of_text>, exactly as open_clip.tokenize does."""
    encoding = get_tokenizer(tokenizer)
    start = [encoding.sot_token] if tokenizer == "clip" else []
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, ids in enumerate(encoding.encode_ordinary_batch(list(texts))):
        ids = (start + ids)[: context_length - 1] + [encoding.eot_token]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


# ----------------------------------------------------------------------------- CLIP's BPE tokenizer
# Published CLIP weights come with their own tokenizer (OpenAI's simple_tokenizer, which open_clip
# ships): clean and lower-case the text, split it into words, merge each word's UTF-8 bytes by BPE
# with an end-of-word marker "</w>". 49408 ids; <start_of_text> 49406, <end_of_text> 49407.
# Written without ftfy and `regex`; tests/test_pretrained.py checks it equals open_clip.tokenize.

CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"  # open_clip_torch 3.3.0
CLIP_SPECIAL = ("<start_of_text>", "<end_of_text>")
CLIP_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# The simple fixes of ftfy.fix_text, which open_clip applies first: drop control characters,
# straighten curly quotes, undo full width and Latin ligatures (then NFC). Its mojibake repair
# ("cafÃ©" -> "café") is heuristic and left out: such text is tokenized as written.
CLIP_TEXT_FIXES = {
    **dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF,
                     *range(0xFFF9, 0xFFFD)]),
    **dict.fromkeys([0x02BC, *range(0x2018, 0x201C)], "'"), **dict.fromkeys(range(0x201C, 0x2020), '"'),
    0x3000: " ", **{c: unicodedata.normalize("NFKC", chr(c))
                    for c in [*range(0xFF01, 0xFFF0), *map(ord, "ĲĳǱǲǳǄǅǆǇǈǉǊǋǌﬀﬁﬂﬃﬄﬆ")]},
}


def _char_class(char: str) -> str:
    """'L' letter, 'N' number, ' ' dropped, '.' anything else: the classes of CLIP's word split.
    U+0345 matches no alternative of the case-insensitive pattern (it folds to an iota): dropped."""
    category = unicodedata.category(char)[0]
    return category if category in "LN" else " " if char.isspace() or char == "\u0345" else "."


def clip_words(text: str) -> list:
    r"""CLIP's word split, the `regex` pattern `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|
    \p{L}+|\p{N}|[^\s\p{L}\p{N}]+` with str methods: the first alternative that matches wins."""
    words, start = [], 0
    while start < len(text):
        literal = next((w for w in CLIP_SPECIAL + CLIP_CONTRACTIONS if text.startswith(w, start)), "")
        kind, end = _char_class(text[start]), start + max(len(literal), 1)
        while not literal and kind != "N" and end < len(text) and _char_class(text[end]) == kind:
            end += 1
        if literal or kind != " ":
            words.append(text[start:end])
        start = end
    return words


class CLIPTokenizer:
    """CLIP's byte-level BPE with what tokenize() uses of a tiktoken.Encoding. As in open_clip, the
    text "<end_of_text>" inside a caption is that token, not plain text."""

    def __init__(self, merges_path: Path):
        blob = merges_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != CLIP_BPE_SHA256:
            raise DataError(f"{merges_path}: SHA-256 differs from open_clip's; restore the file from git")
        lines = gzip.decompress(blob).decode().split("\n")[1:48895]  # 48894 merges: 2 * 256 + 48894 + 2 = 49408 ids
        merges = [tuple(line.split()) for line in lines]
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # bytes that are their own symbol
        self.byte_symbol = {b: chr(b) for b in printable}
        self.byte_symbol |= {b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in printable)}
        symbols = list(self.byte_symbol.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(CLIP_SPECIAL)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot_token, self.eot_token, self.n_vocab = self.ids[CLIP_SPECIAL[0]], self.ids[CLIP_SPECIAL[1]], len(vocab)
        self.cache = {word: [self.ids[word]] for word in CLIP_SPECIAL}

    def bpe(self, word: str) -> list:
        """A word's byte symbols (the last one marked end-of-word), merged lowest rank first."""
        symbols = [self.byte_symbol[b] for b in word.encode()]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: self.ranks.get(p, math.inf))
            if pair not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                take = 2 if tuple(symbols[i: i + 2]) == pair else 1
                merged.append("".join(symbols[i: i + take]))
                i += take
            symbols = merged
        return [self.ids[s] for s in symbols]

    def encode_ordinary(self, text: str) -> list:
        """Ids of the cleaned text, without start/end tokens (open_clip's SimpleTokenizer.encode)."""
        text = unicodedata.normalize("NFC", text.translate(CLIP_TEXT_FIXES))
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids = []
        for word in clip_words(text):
            if word not in self.cache:
                self.cache[word] = self.bpe(word)
            ids += self.cache[word]
        return ids

    def encode_ordinary_batch(self, texts) -> list:
        return [self.encode_ordinary(text) for text in texts]


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Cut the columns after the last end-of-text token (the largest id in a row): exact for a
    causal encoder that pools at end-of-text, and shorter sequences are cheaper."""
    return tokens[:, : int(tokens.argmax(dim=1).max()) + 1]


# ----------------------------------------------------------------------------- images

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_transform(image_size: int, train: bool = False):
    """Decoded uint8 image [C, H, W] -> normalised float [3, S, S], CLIP's preprocessing:
    resize the short side, centre crop. `train=True` adds a mild random crop (90-100% of the
    area), drawn from the `generator` passed per call so augmentation is reproducible."""

    def transform(image: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        image = image[:3]
        if train:
            height, width = image.shape[-2:]
            side = min(height, width)
            crop = int(side * math.sqrt(0.9 + 0.1 * torch.rand((), generator=generator).item()))
            top = int(torch.randint(0, height - crop + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop + 1, (), generator=generator))
            image = image[:, top: top + crop, left: left + crop]
        image = TF.resize(image, image_size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        image = TF.center_crop(image, image_size)
        image = image.float().div_(255).clamp_(0, 1)
        return TF.normalize(image, CLIP_MEAN, CLIP_STD)

    return transform


def read_image(path: Path, where: str) -> torch.Tensor:
    """Decode an image file (PNG, JPEG, ...); `where` ("file:line") goes into the error."""
    try:
        data = torchvision.io.read_file(str(path))
        return torchvision.io.decode_image(data, mode=torchvision.io.ImageReadMode.RGB)
    except FileNotFoundError:
        raise DataError(f"{where}: image {path} does not exist; fix the path or remove the line") from None
    except (RuntimeError, OSError, ValueError) as error:
        raise DataError(f"{where}: cannot decode image {path} ({str(error).splitlines()[0]}); "
                        "replace the file or remove the line") from None


# ----------------------------------------------------------------------------- triplet readers

TEXT_KEYS = ("caption", "paraphrase", "negation")


def _read_lines(path: Path):
    """Yield (line_number, text) for non-blank lines; non-UTF-8 bytes name their line."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist; pass an existing file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror}); check the path and permissions") from None
    if not blob.strip():
        raise DataError(f"{path}: file is empty; it needs one JSON object per line")
    for number, raw in enumerate(blob.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}:{number}: not valid UTF-8 (byte {error.start}); "
                            "re-encode the file as UTF-8") from None
        if line.strip():
            yield number, line


def _check_record(record: dict, where: str, required: tuple) -> dict:
    for key in ("image",) + required:
        if key not in record:
            raise DataError(f"{where}: missing key {key!r}; every line needs {', '.join(('image',) + required)}"
                            + (" (the chosen loss uses paraphrases and negations; use --loss clip "
                               "to train on captions alone)" if key in ("paraphrase", "negation") else ""))
    for key in TEXT_KEYS:
        if key in record and (not isinstance(record[key], str) or not record[key].strip()):
            raise DataError(f"{where}: {key!r} is empty or not a string; give it a non-empty text")
    if not isinstance(record["image"], str) or not record["image"]:
        raise DataError(f"{where}: 'image' must be a non-empty path string")
    return record


def read_triplets(path, required=("caption",)) -> list:
    """Records {image: absolute Path, caption, paraphrase?, negation?, id, where} from a
    triplets JSONL file or the SemCLIP authors' CSV (image_number|filename, caption,
    paraphrased, negation). Image paths are relative to the file's folder."""
    path = Path(path)
    required = tuple(dict.fromkeys(("caption",) + tuple(required)))
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    records = []
    for number, record in rows:
        where = f"{path}:{number}"
        record = _check_record(record, where, required)
        image = Path(record["image"])
        records.append({
            **record,
            **{key: record[key].strip() for key in TEXT_KEYS if key in record},
            "image": image if image.is_absolute() else path.parent / image,
            "id": str(record.get("id", number)),
            "where": where,
        })
    return records


def _read_jsonl(path: Path):
    for number, line in _read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: malformed JSON ({error.msg} at column {error.colno}); "
                            "each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _read_csv(path: Path):
    """The SemCLIP authors' layout; the image is `filename`, or 9-digit `image_number` + .jpg."""
    lines = list(_read_lines(path))
    header_number = lines[0][0]
    reader = csv.DictReader(line for _, line in lines)
    columns = set(reader.fieldnames or ())
    if not columns & {"image", "filename", "image_number"}:
        raise DataError(f"{path}:{header_number}: no image column; the header needs "
                        "image, filename or image_number")
    for (number, _), row in zip(lines[1:], reader):
        record = {key: value for key, value in row.items() if key is not None and value is not None}
        if "paraphrased" in record:
            record["paraphrase"] = record.pop("paraphrased")
        if "image" not in record:
            if record.get("filename"):
                record["image"] = record["filename"]
            elif record.get("image_number", "").strip().isdigit():
                record["image"] = f"{int(record['image_number']):09d}.jpg"
            else:
                raise DataError(f"{path}:{number}: no image file name; fill filename or image_number")
        if "image_number" in record and "id" not in record:
            record["id"] = record["image_number"]
        yield number, record


class TripletDataset(torch.utils.data.Dataset):
    """Items are (image, caption, paraphrase, negation). Indexed by (index, seed) so that the
    random crop depends only on the sample's seed, not on worker count or on resuming."""

    def __init__(self, records: list, image_size: int, train: bool = True):
        missing = next((r for r in records if not r["image"].is_file()), None)
        if missing is not None:
            raise DataError(f"{missing['where']}: image {missing['image']} does not exist; "
                            "fix the path or remove the line")
        self.records = records
        self.transform = image_transform(image_size, train=train)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        index, seed = key
        record = self.records[index]
        generator = torch.Generator().manual_seed(seed)
        image = self.transform(read_image(record["image"], record["where"]), generator)
        return (image, record["caption"], record.get("paraphrase", ""), record.get("negation", ""))


class EpochBatches(torch.utils.data.Sampler):
    """Batches of (index, seed), reshuffled each epoch from (seed, epoch), resumable at any step:
    skipping ahead touches no images, so a resumed run sees exactly the batches it would have."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0):
        if num_items < batch_size:
            raise DataError(f"the data set has {num_items} items, fewer than one batch of {batch_size}; "
                            "lower --batch-size or add data")
        self.num_items, self.batch_size, self.seed, self.start_step = num_items, batch_size, seed, start_step
        self.steps_per_epoch = num_items // batch_size

    def __iter__(self):
        step = self.start_step
        while True:
            epoch, offset = divmod(step, self.steps_per_epoch)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=generator)
            sample_seeds = torch.randint(0, 2 ** 62, (self.num_items,), generator=generator)
            for batch in range(offset, self.steps_per_epoch):
                rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
                yield list(zip(order[rows].tolist(), sample_seeds[rows].tolist()))
            step = (epoch + 1) * self.steps_per_epoch


def make_collate(context_length: int, tokenizer: str):
    """Stack images and tokenize the three texts, padding trimmed (see trim_padding)."""
    return functools.partial(_collate, context_length=context_length, tokenizer=tokenizer)


def _collate(items, context_length, tokenizer):
    images, captions, paraphrases, negations = zip(*items)
    texts = trim_padding(tokenize(captions + paraphrases + negations, context_length, tokenizer))
    return torch.stack(images), *texts.chunk(3)


# ----------------------------------------------------------------------------- synthetic world
# Why: a reader should see the paper's effect on a laptop CPU in minutes, with no download.
# Images hold 1-3 coloured shapes. Captions name them; paraphrases reorder and rephrase;
# negations keep every content word and negate one object that IS present. As on the web,
# many captions carry negation words that say nothing about the picture (", no filter"), so a
# plain CLIP learns that "no"/"not"/"without" carry no meaning -- and is fooled by negations.

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
           "yellow": (235, 215, 40), "purple": (160, 60, 200), "white": (240, 240, 240)}
DISTRACTORS = (", no filter", ", not edited", ", without flash")
PARAPHRASE_TEMPLATES = ("there is {}", "an image of {}", "a photo of {}", "this picture shows {}", "{}")
SYNTH_CANVAS = 64


def _shape_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":
        return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    arm = radius * 0.32
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))


def _render(objects, rng: np.random.Generator) -> np.ndarray:
    """Objects as (colour, shape, cx, cy, radius) on a dark noisy background -> uint8 [H, W, 3]."""
    background = rng.uniform(0, 70, size=3) + rng.uniform(0, 40)
    canvas = np.empty((SYNTH_CANVAS, SYNTH_CANVAS, 3), np.float32)
    canvas[:] = background
    for colour, shape, cx, cy, radius in objects:
        tint = np.array(COLOURS[colour], np.float32) * rng.uniform(0.85, 1.0)
        canvas[_shape_mask(shape, cx, cy, radius, SYNTH_CANVAS)] = tint
    canvas += rng.normal(0, 8, size=canvas.shape)
    return canvas.clip(0, 255).astype(np.uint8)


def _place(count: int, rng: np.random.Generator):
    """Non-overlapping centres and radii, with a margin so that a 90% crop keeps every object."""
    while True:
        radii = rng.uniform(8, 13, size=count)
        centres = rng.uniform(16, SYNTH_CANVAS - 16, size=(count, 2))
        gaps = [np.hypot(*(centres[i] - centres[j])) - radii[i] - radii[j]
                for i in range(count) for j in range(i)]
        if all(gap > 2 for gap in gaps):
            return centres, radii


def _join(phrases) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _negate(phrases, target: int, rng: np.random.Generator) -> str:
    """Negate one present object, in one of several forms, keeping every other word."""
    negated = phrases[target].removeprefix("a ")
    rest = phrases[:target] + phrases[target + 1:]
    if not rest:
        return str(rng.choice([f"no {negated}", f"there is no {negated}", f"not a {negated}"]))
    form = rng.integers(3)
    if form == 0:
        return _join(phrases[:target] + [f"no {negated}"] + phrases[target + 1:])
    linker = ("but no", "without a", "and not a")[rng.integers(3)]
    return f"{_join(rest)} {linker} {negated}"


def synth_example(rng: np.random.Generator):
    """One (image, caption, paraphrase, negation, object names) of the synthetic world."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    kinds = sorted(rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False))
    names = [(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)]) for k in kinds]
    centres, radii = _place(count, rng)
    image = _render([(c, s, x, y, r) for (c, s), (x, y), r in zip(names, centres, radii)], rng)
    phrases = [f"a {colour} {shape}" for colour, shape in names]
    distractor = str(rng.choice(DISTRACTORS)) if rng.random() < 0.5 else ""
    caption = _join(phrases) + distractor
    shuffled = [phrases[i] for i in rng.permutation(count)]
    paraphrase = str(rng.choice(PARAPHRASE_TEMPLATES)).format(_join(shuffled)) + distractor
    negation = _negate(phrases, int(rng.integers(count)), rng) + distractor
    return image, caption, paraphrase, negation, [f"{colour} {shape}" for colour, shape in names]


def write_synth(out, n_train: int = 10000, n_test: int = 1000, seed: int = 0, log=print):
    """Write images/*.png, train.jsonl and test.jsonl; the same seed gives the same files."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(count):
            image, caption, paraphrase, negation, objects = synth_example(rng)
            name = f"images/{split}_{i:06d}.png"
            torchvision.io.write_png(torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(out / name))
            lines.append(json.dumps({"image": name, "caption": caption, "paraphrase": paraphrase,
                                     "negation": negation, "id": f"{split}_{i:06d}", "objects": objects}))
        temporary = out / f"{split}.jsonl.tmp"
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        temporary.replace(out / f"{split}.jsonl")
        log(f"wrote {count} {split} triplets to {out / (split + '.jsonl')}")
    return out


def synth_classes():
    """Zero-shot classes of the synthetic world: every colour-shape pair."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def main():
    parser = argparse.ArgumentParser(
        description="Write the built-in synthetic negation world (images + triplets JSONL).",
        epilog="example: python data.py synth --out data/synth --n-train 10000 --n-test 1000 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="write the synthetic world")
    synth.add_argument("--out", type=Path, default=DEFAULT_SYNTH_DIR, help="output folder (default: %(default)s)")
    synth.add_argument("--n-train", type=int, default=10000, help="training triplets (default: %(default)s)")
    synth.add_argument("--n-test", type=int, default=1000, help="held-out triplets (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    if args.n_train < 1 or args.n_test < 1:
        parser.error("--n-train and --n-test must be at least 1")
    write_synth(args.out, args.n_train, args.n_test, args.seed)


if __name__ == "__main__":
    run_cli(main)
