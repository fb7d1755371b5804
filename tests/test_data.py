"""data.py: image pipeline, readers and their errors, batching."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision

from data import (CLIP_STD, EpochBatches, TripletDataset, check_images, image_transform, make_collate, read_image,
                  read_triplets)
from errors import DataError

from conftest import run_python


def test_image_transform_gives_normalised_square_rgb():
    transform = image_transform(32)
    gray = torch.full((1, 40, 60), 255, dtype=torch.uint8)
    rgba = torch.zeros((4, 50, 50), dtype=torch.uint8)
    out_gray, out_rgba = transform(gray), transform(rgba)
    assert out_gray.shape == out_rgba.shape == (3, 32, 32)
    torch.testing.assert_close(out_gray[:, 0, 0], (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                               / torch.tensor([0.26862954, 0.26130258, 0.27577711]))


def test_authors_transform_is_a_squashing_resize_with_imagenet_statistics_in_training_too():
    """Their dataset.py: Resize((S, S)) (no crop), ToTensor, Normalize(ImageNet mean/std); no augmentation."""
    image = torch.randint(0, 256, (3, 150, 320), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    resized = torchvision.transforms.Resize((224, 224), antialias=True)(image).float() / 255
    expected = torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(resized)
    for train in (False, True):
        out = image_transform(224, train=train, kind="authors")(image, torch.Generator().manual_seed(1))
        assert out.shape == (3, 224, 224) and (out - expected).abs().max() <= 1e-5


def test_clip_is_the_default_transform_and_unknown_kinds_are_refused():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(image_transform(32)(image), image_transform(32, kind="clip")(image))
    with pytest.raises(ValueError, match="clip, authors"):
        image_transform(32, kind="imagenet")


def test_train_transform_is_a_function_of_the_seed():
    transform, image = image_transform(32, train=True), torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    first = transform(image, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, transform(image, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, transform(image, torch.Generator().manual_seed(2)))


# ----------------------------------------------------------------------------- every kind of image file
# Each kind is written by Pillow (or by hand: 16-bit colour PNG) from known pixels; what read_image gives
# is compared with those pixels: exactly for lossless formats, within a mean error for JPEG.

COLOURS = np.array([[200, 30, 40], [20, 180, 60], [30, 40, 220], [250, 250, 250], [10, 10, 10], [240, 200, 20]])
PIXELS = np.kron(COLOURS.reshape(2, 3, 3), np.ones((16, 16, 1))).astype(np.uint8)  # 32 x 48, six 16-px blocks
GREY = np.round(PIXELS @ [0.299, 0.587, 0.114]).astype(np.uint8)                      # ITU-R 601-2, as Pillow's L


def write_png16(path, pixels):
    """A 16-bit PNG (grey, or RGB with 3 channels) written from its chunks, as the PNG spec lays them out."""
    height, width, channels = pixels.shape
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0 per row, big-endian
    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def rgb(path, image=PIXELS, **options):
    PIL.Image.fromarray(image).save(path, **options)


def rgba(path):
    alpha = (np.arange(PIXELS[..., 0].size) % 256).reshape(32, 48, 1)
    PIL.Image.fromarray(np.dstack([PIXELS, alpha]).astype(np.uint8)).save(path)


def animated(path):
    first, second = PIL.Image.fromarray(PIXELS), PIL.Image.fromarray(255 - PIXELS)
    first.save(path, save_all=True, append_images=[second], lossless=True)  # lossless: WebP's option


IMAGE_KINDS = {  # name: (file name, write it from the pixels, the pixels it holds, mean error allowed)
    "JPEG RGB": ("rgb.jpg", lambda p: rgb(p, quality=95), PIXELS, 6),
    "JPEG greyscale": ("grey.jpg", lambda p: rgb(p, GREY, quality=95), GREY, 6),
    "JPEG CMYK": ("cmyk.jpg", lambda p: PIL.Image.fromarray(PIXELS).convert("CMYK").save(p, quality=95), PIXELS, 6),
    "PNG RGBA": ("rgba.png", rgba, PIXELS, 0),
    "PNG palette": ("palette.png", lambda p: PIL.Image.fromarray(PIXELS).quantize(8).save(p), PIXELS, 0),
    "PNG 16-bit greyscale": ("grey16.png", lambda p: rgb(p, GREY.astype(np.uint16) * 257), GREY, 0),
    "PNG 16-bit RGB": ("rgb16.png", lambda p: write_png16(p, PIXELS.astype(np.uint16) * 257), PIXELS, 0),
    "WebP": ("rgb.webp", lambda p: rgb(p, lossless=True), PIXELS, 0),
    "animated WebP": ("animated.webp", animated, PIXELS, 0),
    "GIF": ("rgb.gif", rgb, PIXELS, 0),
    "animated GIF": ("animated.gif", animated, PIXELS, 0),
    "BMP": ("rgb.bmp", rgb, PIXELS, 0),
    "TIFF": ("rgb.tif", rgb, PIXELS, 0),
    "TIFF 16-bit greyscale": ("grey16.tif", lambda p: rgb(p, GREY.astype(np.uint16) * 257), GREY, 0),
}


def write_image_kind(folder, kind):
    """(path, the pixels it holds as uint8 [3, H, W], mean error allowed) of one IMAGE_KINDS file."""
    name, write, pixels, error = IMAGE_KINDS[kind]
    write(folder / name)
    pixels = np.broadcast_to(pixels[..., None], (*pixels.shape, 3)) if pixels.ndim == 2 else pixels
    return folder / name, torch.from_numpy(pixels.copy()).permute(2, 0, 1), error


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_every_kind_of_image_file_reads_as_the_pixels_it_holds(kind, tmp_path):
    """Lossless kinds exactly (alpha dropped, the first frame of an animation), JPEG within its loss."""
    path, expected, error = write_image_kind(tmp_path, kind)
    image = read_image(path, "t.jsonl:1")
    assert image.dtype == torch.uint8 and image.shape == expected.shape
    assert (image.float() - expected.float()).abs().mean() <= error


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_png_gives_the_model_input_of_its_8_bit_copy(channels, tmp_path):
    """Every 16-bit value, not only multiples of 257: the 8-bit copy holds round(v / 257)."""
    values = np.random.default_rng(channels).integers(0, 65536, (32, 32, channels), dtype=np.uint16)
    values[:4] = 65535  # a white band: divided by 255 and clamped, a 16-bit image would be all white
    write_png16(tmp_path / "16.png", values)
    eight = np.round(values / 257).astype(np.uint8)
    PIL.Image.fromarray(eight[..., 0] if channels == 1 else eight).save(tmp_path / "8.png")
    transform = image_transform(32)  # the images' own size: no resampling between the two
    sixteen, copy = (transform(read_image(tmp_path / name, "t.jsonl:1")) for name in ("16.png", "8.png"))
    one_level = 1 / 255 / min(CLIP_STD)
    assert (sixteen - copy).abs().max() <= one_level + 1e-6
    assert abs(sixteen.mean() - copy.mean()) < 0.01


def test_image_transform_scales_a_uint16_tensor_by_its_own_range():
    white16, white8 = torch.full((3, 8, 8), 65535, dtype=torch.uint16), torch.full((3, 8, 8), 255, dtype=torch.uint8)
    assert torch.equal(image_transform(8)(white16), image_transform(8)(white8))


@pytest.mark.parametrize("write, expected", [
    (lambda p: p.write_text("# notes\n"),
     "not an image format torchvision or Pillow reads; it starts with b'# notes"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: PIL.Image.fromarray(np.zeros((4, 4), np.int32)).save(p, format="TIFF"),
     "a 32-bit integer image has no range to scale to 8 bits; save it with 8 or 16 bits per channel"),
    (lambda p: PIL.Image.fromarray(np.zeros((4, 4), np.float32)).save(p, format="TIFF"),
     "a 32-bit floating-point image has no range to scale"),
])
def test_an_image_no_decoder_reads_is_one_line_in_words(write, expected, tmp_path):
    write(tmp_path / "image.png")
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "image.png", "t.jsonl:4")
    message = str(error.value)
    assert message.startswith(f"t.jsonl:4: cannot decode image {tmp_path / 'image.png'} ({expected}")
    assert len(message.splitlines()) == 1 and ".cpp" not in message and "csrc" not in message


def write_jsonl(folder: Path, lines, name="t.jsonl") -> Path:
    path = folder / name
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def good_line(image="img.png", **fields):
    return json.dumps({"image": image, "caption": "a red circle", "paraphrase": "there is a red circle",
                       "negation": "no red circle", **fields})


@pytest.fixture()
def folder(tmp_path):
    torchvision.io.write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(tmp_path / "img.png"))
    return tmp_path


def test_reader_resolves_images_and_defaults_ids(folder):
    records = read_triplets(write_jsonl(folder, [good_line(), "", good_line(id="x7")]), ("paraphrase", "negation"))
    assert [r["id"] for r in records] == ["1", "x7"]
    assert records[0]["image"] == folder / "img.png" and records[1]["where"].endswith("t.jsonl:3")


def test_reader_accepts_the_authors_csv_layout(folder):
    (folder / "000000042.jpg").write_bytes(b"")
    path = folder / "triplets.csv"
    path.write_text('image_number,caption,negation,paraphrased\n42,"a dog, a cat",a dog but no cat,a cat and a dog\n')
    [record] = read_triplets(path, ("paraphrase", "negation"))
    assert record["image"] == folder / "000000042.jpg" and record["id"] == "42"
    assert (record["caption"], record["paraphrase"], record["negation"]) == ("a dog, a cat", "a cat and a dog",
                                                                             "a dog but no cat")


@pytest.mark.parametrize("lines, message", [
    ([good_line(), "{not json"], "t.jsonl:2: malformed JSON"),
    ([json.dumps({"image": "img.png", "caption": "x", "paraphrase": "y"})], "t.jsonl:1: missing key 'negation'"),
    ([good_line(caption="  ")], "t.jsonl:1: 'caption' is empty"),
    ([good_line(), b"\xff\xfe caption"], "t.jsonl:2: not valid UTF-8"),
    (["[1, 2]"], "t.jsonl:1: expected a JSON object"),
    ([""], "t.jsonl: file is empty"),
])
def test_reader_errors_name_file_line_and_problem(folder, lines, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_triplets(write_jsonl(folder, lines), ("paraphrase", "negation"))


def test_missing_image_is_named_before_training(folder):
    records = read_triplets(write_jsonl(folder, [good_line(), good_line("gone.png")]))
    with pytest.raises(DataError, match=r"t.jsonl:2: image .*gone.png does not exist"):
        TripletDataset(records, 32)


def test_distractor_images_come_from_the_file_or_else_from_the_other_records(folder):
    for name, value in (("a.png", 10), ("b.png", 20), ("c.png", 30)):
        torchvision.io.write_png(torch.full((3, 8, 8), value, dtype=torch.uint8), str(folder / name))
    given = TripletDataset(read_triplets(write_jsonl(folder, [good_line("a.png", distractor="c.png")])), 8,
                           train=False, fields=("caption", "distractor"))
    image, caption, distractor = given[0, 0]
    assert caption == "a red circle" and torch.equal(distractor, image_transform(8)(torch.full((3, 8, 8), 30,
                                                                                              dtype=torch.uint8)))
    drawn = TripletDataset(read_triplets(write_jsonl(folder, [good_line("a.png"), good_line("b.png")], "two.jsonl")),
                           8, train=False, fields=("caption", "distractor"))
    assert torch.equal(drawn[0, 5][2], drawn[1, 0][0]) and torch.equal(drawn[1, 7][2], drawn[0, 0][0])
    batch = make_collate(32, "cl100k_base")([drawn[0, 1], drawn[1, 2]])
    assert batch[0].shape == batch[2].shape == (2, 3, 8, 8) and batch[1].dtype == torch.long


def test_corrupt_image_is_named_when_read(folder):
    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    dataset = TripletDataset(read_triplets(write_jsonl(folder, [good_line("bad.png")])), 32)
    with pytest.raises(DataError, match=r"t.jsonl:1: cannot decode image .*bad.png"):
        dataset[0, 0]


@pytest.mark.parametrize("case, expected", [
    ("malformed", ":2: malformed JSON"), ("missing_key", ":1: missing key 'paraphrase'"),
    ("missing_image", ":1: image"), ("corrupt_image", ":1: cannot decode image"),
    ("empty_file", "file is empty"), ("not_utf8", ":1: not valid UTF-8"), ("empty_caption", ":1: 'caption' is empty"),
])
def test_train_cli_bad_input_is_one_line_and_exit_1(folder, case, expected):
    (folder / "bad.png").write_bytes(b"garbage")
    lines = {"malformed": [good_line(), "{"], "missing_key": [json.dumps({"image": "img.png", "caption": "c"})],
             "missing_image": [good_line("nope.png")], "corrupt_image": [good_line("bad.png")] * 2,
             "empty_file": [""], "not_utf8": [b"\xc3\x28"], "empty_caption": [good_line(caption="")]}[case]
    path = write_jsonl(folder, lines)
    result = run_python("train.py", "--data", path, "--batch-size", "1", "--steps", "1", "--workers", "1",
                     "--out", folder / "run", "--device", "cpu")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and expected in result.stderr
    if case == "corrupt_image":
        assert f"python data.py check {path}" in result.stderr


def flip_a_bit_of_the_image_data(path):
    """A PNG damaged as a bad disk or download damages it: one bit of its compressed pixels flipped."""
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 8] ^= 0x10
    path.write_bytes(data)


def test_check_names_exactly_the_corrupt_image_and_exits_1(folder):
    """torchvision 0.29's PNG decoder kills the process on this damage (a segmentation fault): named, not a crash."""
    for i in range(50):
        torchvision.io.write_png(torch.full((3, 8, 8), i, dtype=torch.uint8), str(folder / f"{i}.png"))
    flip_a_bit_of_the_image_data(folder / "7.png")
    path = write_jsonl(folder, [good_line(f"{i}.png") for i in range(50)])
    result = run_python("data.py", "check", path, "--workers", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    named = [line for line in (result.stdout + result.stderr).splitlines() if "cannot decode" in line]
    assert len(named) == 1 and f"{path}:8:" in named[0] and str(folder / "7.png") in named[0]
    assert "(PNG data that torchvision and Pillow cannot decode: damaged, cut short" in named[0]
    assert "1 of 50 images cannot be read" in result.stderr
    torchvision.io.write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "7.png"))
    clean = run_python("data.py", "check", path, "--workers", "0")
    assert clean.returncode == 0 and "all 50 images decode" in clean.stdout, clean.stderr


def test_check_and_training_read_a_file_with_every_kind_of_image(tmp_path):
    path = write_jsonl(tmp_path, [good_line(write_image_kind(tmp_path, kind)[0].name) for kind in IMAGE_KINDS])
    said = []
    check_images(path, workers=0, log=said.append)  # python data.py check, without starting a process
    assert said == [f"{path}: all {len(IMAGE_KINDS)} images decode"]
    trained = run_python("train.py", "--data", path, "--batch-size", len(IMAGE_KINDS), "--steps", "1", "--workers", "1",
                         "--out", tmp_path / "run", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr


def test_special_tokens_and_long_captions_are_valid_training_text(folder):
    lines = [good_line(caption="<|endoftext|> a red circle " + "very " * 400)] * 2
    result = run_python("train.py", "--data", write_jsonl(folder, lines), "--batch-size", "2", "--steps", "1",
                     "--workers", "0", "--out", folder / "run", "--device", "cpu")
    assert result.returncode == 0, result.stderr


def test_epoch_batches_resume_at_any_step_sees_the_same_batches():
    def take(sampler, count):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]
    full = take(EpochBatches(10, 3, seed=5), 7)  # 3 batches per epoch: crosses two epoch boundaries
    assert take(EpochBatches(10, 3, seed=5, start_step=4), 3) == full[4:]
    assert sorted(i for batch in full[:3] for i, _ in batch) == sorted(set(i for batch in full[:3] for i, _ in batch))


def test_collate_cuts_padding_after_the_longest_text():
    images = torch.zeros(3, 4, 4)
    batch = make_collate(32, "cl100k_base")([(images, "a red circle", "there is a red circle", "no red circle")] * 2)
    assert batch[0].shape == (2, 3, 4, 4)
    assert [t.shape for t in batch[1:]] == [(2, 6)] * 3  # "there is a red circle" + end-of-text
    assert batch[2][0, -1] == 100257


def test_caption_augment_swaps_in_the_paraphrase_for_about_half_the_samples_by_seed(folder):
    records = read_triplets(write_jsonl(folder, [good_line()] * 4), required=("paraphrase",))
    augmented = TripletDataset(records, 8, fields=("caption", "paraphrase"), caption_augment="paraphrase")
    captions = [augmented[(0, seed)][1] for seed in range(400)]
    assert set(captions) == {"a red circle", "there is a red circle"}
    assert 150 < captions.count("there is a red circle") < 250
    assert captions == [augmented[(0, seed)][1] for seed in range(400)]  # a function of the sample's seed
    plain = TripletDataset(records, 8, fields=("caption",))
    assert torch.equal(plain[(0, 5)][0], augmented[(0, 5)][0])  # the same crop: the coin is drawn after it
    lacking = read_triplets(write_jsonl(folder, [json.dumps({"image": "img.png", "caption": "a"})]))
    with pytest.raises(DataError, match="no 'paraphrase' to augment the caption with"):
        TripletDataset(lacking, 8, caption_augment="paraphrase")


def test_check_finds_the_authors_csv_images_by_name_in_image_dir(folder):
    (folder / "csv").mkdir()
    path = folder / "csv" / "triplets.csv"
    path.write_text("image_number,caption,negation,paraphrased\n7,a dog,no dog,a hound\n")
    missing = run_python("data.py", "check", path, "--workers", "0")
    expected = f"{path}:2: image {folder / 'csv' / '000000007.jpg'} does not exist"
    assert missing.returncode == 1 and expected in missing.stdout
    torchvision.io.write_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "000000007.jpg"))
    found = run_python("data.py", "check", path, "--image-dir", folder, "--workers", "0")
    assert found.returncode == 0, found.stdout + found.stderr
