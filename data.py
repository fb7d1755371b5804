"""Data: triplet readers (JSONL, the SemCLIP authors' CSV), the image pipeline, batching.

    python data.py synth --out /tmp/w       # the built-in world (the same as python synth.py)
    python data.py check triplets.csv       # decode every image now, not at hour ten of training

Every reader fails with `DataError("file:line: problem; what to do")`, which the command
lines print as one line before exiting with status 1.
"""

import argparse
import csv
import functools
import io
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torchvision.io
import torchvision.transforms.functional
import torchvision.transforms.v2.functional as TF

import synth
from errors import DataError, non_negative_int, run_cli
from tokenizer import tokenize, trim_padding

# ----------------------------------------------------------------------------- images

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_TRANSFORMS = ("clip", "authors")


def image_transform(image_size: int, train: bool = False, kind: str = "clip"):
    """Decoded uint8 image [C, H, W] -> normalised float [3, S, S].

    kind="clip": CLIP's preprocessing: resize the short side (bicubic), centre crop, CLIP mean/std.
    `train=True` adds a mild random crop (90-100% of the area), drawn from the `generator` passed
    per call so augmentation is reproducible.
    kind="authors": the SemCLIP authors' (their dataset.py, use_imagenet_transforms=True): squash
    to S x S (bilinear, antialiased, no crop), ImageNet mean/std, no augmentation even in training.
    Weights expect the preprocessing they were trained with, so the checkpoint records the kind."""
    if kind not in IMAGE_TRANSFORMS:
        raise ValueError(f"image transform must be one of {', '.join(IMAGE_TRANSFORMS)}, not {kind!r}")

    def transform(image: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
        image = to_uint8(image)  # a uint16 image scaled by its own range, not divided by 255
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        image = image[:3]
        if kind == "authors":
            # torchvision's classic Resize((S, S)), as theirs (resized in float, rounded to uint8); the v2
            # uint8 kernel rounds differently, by up to one grey level
            image = torchvision.transforms.functional.resize(image, [image_size, image_size], antialias=True)
            return TF.normalize(image.float().div_(255), IMAGENET_MEAN, IMAGENET_STD)
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
    """Decode an image file into uint8 RGB [3, H, W]: JPEG, WebP and GIF through torchvision, the rest
    (PNG, BMP, TIFF, animated WebP, ...) through Pillow, torchvision's own image dependency. An
    animation gives its first frame; a 16-bit image is scaled by its own range (a white 16-bit PNG is
    white, not 257 times too bright). `where` ("file:line") goes into the error."""
    if not Path(path).is_file():
        raise DataError(f"{where}: image {path} does not exist; fix the path or remove the line")
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{where}: cannot read image {path} ({error.strerror}); check its permissions") from None
    try:
        image = _decode(blob)
    except _Undecodable as reason:
        raise DataError(f"{where}: cannot decode image {path} ({reason}); replace the file or remove the line") \
            from None
    return to_uint8(image[0] if image.ndim == 4 else image)  # an animated GIF comes as [frames, 3, H, W]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """An integer image of any depth as uint8, scaled by its own range and rounded: 16-bit 65535 -> 255."""
    if image.dtype == torch.uint8:
        return image
    top = torch.iinfo(image.dtype).max
    return ((image.to(torch.int64) * 255 + top // 2) // top).to(torch.uint8)


SIGNATURES = {rb"\xff\xd8\xff": "JPEG", rb"\x89PNG": "PNG", rb"GIF8": "GIF", rb"RIFF....WEBP": "WebP", rb"BM": "BMP",
              rb"II\*\x00|MM\x00\*": "TIFF"}  # how each format's files start
# torchvision's decoders, where they are safe: its PNG decoder (0.29) crashes the whole process on damaged
# image data (a flipped bit), so PNG goes through Pillow, which says so
TORCHVISION_FORMATS = ("JPEG", "WebP", "GIF")


class _Undecodable(Exception):
    """Why an image file cannot be decoded, in words (no library internals)."""


def _decode(blob: bytes) -> torch.Tensor:
    kind = next((name for start, name in SIGNATURES.items() if re.match(start, blob, re.DOTALL)), None)
    if kind in TORCHVISION_FORMATS:
        try:
            return torchvision.io.decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8),
                                               mode=torchvision.io.ImageReadMode.RGB)
        except (RuntimeError, ValueError):  # an animated WebP, damaged data: Pillow may still read it
            pass
    return _decode_with_pillow(blob, kind)


def _decode_with_pillow(blob: bytes, kind: str) -> torch.Tensor:
    """[3, H, W]: uint8 RGB, or uint16 for 16-bit greyscale (Pillow's mode I;16; Pillow keeps only the
    high byte of 16-bit colour)."""
    try:
        with warnings.catch_warnings():  # notes on the metadata of a file that decodes; the 89-megapixel note
            warnings.simplefilter("ignore")
            with PIL.Image.open(io.BytesIO(blob)) as image:
                mode = image.mode
                if mode.startswith("I;16"):
                    return torch.from_numpy(np.array(image, dtype=np.int32)).to(torch.uint16).expand(3, -1, -1)
                if mode not in ("I", "F"):  # 1, L, LA, P, RGB, RGBA, CMYK, ...: Pillow's own conversion
                    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except PIL.Image.DecompressionBombError as error:  # says how many pixels, and the limit
        raise _Undecodable(str(error)) from None
    except Exception:  # noqa: BLE001 -- Pillow raises many kinds for damaged data; say it in words instead
        if not blob:
            raise _Undecodable("the file is empty") from None
        if kind is None:
            raise _Undecodable(f"not an image format torchvision or Pillow reads; it starts with {blob[:8]!r}") \
                from None
        raise _Undecodable(f"{kind} data that torchvision and Pillow cannot decode: damaged, cut short, or a "
                           "variant they lack") from None
    raise _Undecodable(f"a 32-bit {'integer' if mode == 'I' else 'floating-point'} image has no range to scale "
                       "to 8 bits; save it with 8 or 16 bits per channel")


# ----------------------------------------------------------------------------- triplet readers

TEXT_KEYS = ("caption", "paraphrase", "negation", "true_negation")


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


def _check_record(record: dict, where: str, required: tuple, why: str) -> dict:
    for key in ("image",) + required:
        if key not in record:
            raise DataError(f"{where}: missing key {key!r}; every line needs {', '.join(('image',) + required)}"
                            + (f" ({why})" if key in ("paraphrase", "negation") else "")
                            + ("; semclip_tn also trains on a true statement that negates an absent object, "
                               "e.g. \"a dog on grass, no cat\"" if key == "true_negation" else ""))
    for key in TEXT_KEYS:
        if key in record and (not isinstance(record[key], str) or not record[key].strip()):
            raise DataError(f"{where}: {key!r} is empty or not a string; give it a non-empty text")
    for key in ("image", "distractor"):
        if key in record and (not isinstance(record[key], str) or not record[key]):
            raise DataError(f"{where}: {key!r} must be a non-empty path string")
    return record


TRAINING_NEEDS = "the chosen loss uses paraphrases and negations; use --loss clip to train on captions alone"


def read_triplets(path, required=("caption",), why=TRAINING_NEEDS) -> list:
    """Records {image: absolute Path, caption, paraphrase?, negation?, distractor?, id, where} from a
    triplets JSONL file or the SemCLIP authors' CSV (image_number|filename, caption,
    paraphrased, negation). Image paths are relative to the file's folder; `distractor` is a
    second image, CoN-CLIP's (one that the negated caption describes). `why` tells a line
    without a required paraphrase or negation what needs it."""
    path = Path(path)
    required = tuple(dict.fromkeys(("caption",) + tuple(required)))
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    records = []
    for number, record in rows:
        where = f"{path}:{number}"
        record = _check_record(record, where, required, why)
        records.append({
            **record,
            **{key: record[key].strip() for key in TEXT_KEYS if key in record},
            **{key: path.parent / record[key] for key in ("image", "distractor") if key in record},
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
    try:
        rows = list(reader)
    except csv.Error as error:  # a stray carriage return or quote, a NUL byte
        raise DataError(f"{path}:{lines[reader.line_num - 1][0]}: bad CSV ({error}); fix or remove the line") from None
    columns = set(reader.fieldnames or ())
    if not columns & {"image", "filename", "image_number"}:
        raise DataError(f"{path}:{header_number}: no image column; the header needs "
                        "image, filename or image_number")
    for (number, _), row in zip(lines[1:], rows):
        record = {key: value for key, value in row.items() if key is not None and value is not None}
        if "paraphrased" in record:
            record["paraphrase"] = record.pop("paraphrased")
        if "image" not in record:
            if record.get("filename"):
                record["image"] = record["filename"]
            elif record.get("image_number", "").strip().isdecimal():  # int() fails on "²", a digit
                record["image"] = f"{int(record['image_number']):09d}.jpg"
            else:
                raise DataError(f"{path}:{number}: no image file name; fill filename or image_number")
        if "image_number" in record and "id" not in record:
            record["id"] = record["image_number"]
        yield number, record


class TripletDataset(torch.utils.data.Dataset):
    """Items are (image, *values): for each of `fields`, the record's text ("" where it has none),
    or for "distractor" a second image (see `distractor`). Indexed by (index, seed) so that the
    random crop depends only on the sample's seed, not on worker count or on resuming.
    caption_augment="paraphrase": the caption is the record's caption or its paraphrase, one of the
    two at random per sample (also from the seed)."""

    def __init__(self, records: list, image_size: int, train: bool = True, fields=TEXT_KEYS, kind: str = "clip",
                 caption_augment=None):
        keys = ("image", "distractor") if "distractor" in fields else ("image",)
        missing = next(((r, k) for r in records for k in keys if k in r and not r[k].is_file()), None)
        if missing is not None:
            record, key = missing
            raise DataError(f"{record['where']}: {key} {record[key]} does not exist; fix the path or remove the line")
        if caption_augment not in (None, "paraphrase"):
            raise ValueError(f"caption_augment must be None or 'paraphrase', not {caption_augment!r}")
        lacking = next((r for r in records if caption_augment and "paraphrase" not in r), None)
        if lacking is not None:
            raise DataError(f"{lacking['where']}: no 'paraphrase' to augment the caption with; "
                            "add one or drop --caption-augment")
        self.records, self.fields, self.caption_augment = records, tuple(fields), caption_augment
        self.transform = image_transform(image_size, train=train, kind=kind)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        index, seed = key
        record = self.records[index]
        generator = torch.Generator().manual_seed(seed)
        image = self.transform(read_image(record["image"], record["where"]), generator)
        values = {field: self.distractor(index, generator) if field == "distractor" else record.get(field, "")
                  for field in self.fields}
        if self.caption_augment and torch.rand((), generator=generator) < 0.5:
            values["caption"] = record["paraphrase"]
        return (image, *values.values())

    def distractor(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """The record's distractor image (CoN-CLIP's: from a separate pool, one that the negated caption
        describes). A file without them (the synthetic world) gets another of its images, drawn from
        the sample's seed: CoN-CLIP's loss then runs, but its premise that the negated caption
        describes the distractor rarely holds, so this exercises the code, it does not reproduce them."""
        record = self.records[index]
        if "distractor" in record:
            return self.transform(read_image(record["distractor"], record["where"]), generator)
        other = (index + 1 + int(torch.randint(0, max(1, len(self.records) - 1), (), generator=generator))) \
            % len(self.records)
        return self.transform(read_image(self.records[other]["image"], self.records[other]["where"]), generator)


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
    """Stack images and tokenize every text field, padding trimmed: (images, per field: tokens or images)."""
    return functools.partial(_collate, context_length=context_length, tokenizer=tokenizer)


def _collate(items, context_length, tokenizer):
    images, *fields = zip(*items)
    texts = [field for field in fields if isinstance(field[0], str)]
    tokens = iter(trim_padding(tokenize(sum(texts, ()), context_length, tokenizer)).chunk(len(texts)))
    return torch.stack(images), *(next(tokens) if isinstance(field[0], str) else torch.stack(field)
                                  for field in fields)


class _DecodeCheck(torch.utils.data.Dataset):
    """Item i: None if record i's image decodes, else the one-line reason (decoded in DataLoader workers)."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        try:
            read_image(record["image"], record["where"])
        except DataError as error:
            return str(error)
        return None


def check_images(path, workers: int = 2, image_dir=None, log=print):
    """Decode every image of a triplets file; list each bad one (line, path, reason), then fail if any.
    `image_dir`: find the images there by file name (the authors' CSV names files, not folders)."""
    records = read_triplets(path)
    if image_dir is not None:
        records = [{**r, "image": Path(image_dir) / r["image"].name} for r in records]
    loader = torch.utils.data.DataLoader(_DecodeCheck(records), batch_size=64, num_workers=workers,
                                         collate_fn=list)
    bad, done, start, shown = [], 0, time.time(), 0.0
    for results in loader:
        bad += [reason for reason in results if reason is not None]
        done += len(results)
        if time.time() - shown >= 5 or done == len(records):  # a progress line every 5 s and at the end
            shown = time.time()
            print(f"checked {done}/{len(records)} images | {len(bad)} bad | "
                  f"{done / max(shown - start, 1e-9):.0f} img/s", file=sys.stderr)
    for reason in bad:
        log(reason)
    if bad:
        raise DataError(f"{path}: {len(bad)} of {len(records)} images cannot be read (listed above); "
                        "replace those files or remove their lines")
    log(f"{path}: all {len(records)} images decode")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="data.py", description="Data tools.",
        epilog="examples:\n"
               "  python data.py synth --out /tmp/w --n-train 2000 --n-test 200\n"
               "  python data.py check triplets.jsonl --workers 8\n"
               "  python data.py check ccneg_paraphrased.csv --image-dir ~/ccneg/images",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("synth", add_help=False, help="write the synthetic world (python synth.py --help)")
    check = commands.add_parser("check", help="decode every image of a triplets file (.jsonl or the authors' .csv); "
                                              "list the bad ones, exit 1 if any")
    check.add_argument("file", type=Path)
    check.add_argument("--image-dir", type=Path, help="the images' folder, if not the file's")
    check.add_argument("--workers", type=non_negative_int, default=2, help="decoding processes (default: %(default)s)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "synth":
        synth.main(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    else:
        check_images(args.file, args.workers, args.image_dir)


if __name__ == "__main__":
    run_cli(main)
