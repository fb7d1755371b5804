"""data.py: image pipeline, readers and their errors, batching."""

import json
from pathlib import Path

import pytest
import torch
import torchvision

from data import EpochBatches, TripletDataset, image_transform, make_collate, read_triplets
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


def test_check_names_exactly_the_corrupt_image_and_exits_1(folder):
    for i in range(50):
        torchvision.io.write_png(torch.full((3, 8, 8), i, dtype=torch.uint8), str(folder / f"{i}.png"))
    (folder / "7.png").write_bytes(b"\x89PNG cut short")
    path = write_jsonl(folder, [good_line(f"{i}.png") for i in range(50)])
    result = run_python("data.py", "check", path, "--workers", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    named = [line for line in (result.stdout + result.stderr).splitlines() if "cannot decode" in line]
    assert len(named) == 1 and f"{path}:8:" in named[0] and str(folder / "7.png") in named[0]
    assert "1 of 50 images cannot be read" in result.stderr
    torchvision.io.write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "7.png"))
    clean = run_python("data.py", "check", path, "--workers", "0")
    assert clean.returncode == 0 and "all 50 images decode" in clean.stdout, clean.stderr


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
    assert missing.returncode == 1 and f"{path}:2: image {folder / 'csv' / '000000007.jpg'} does not exist" in missing.stdout
    torchvision.io.write_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "000000007.jpg"))
    found = run_python("data.py", "check", path, "--image-dir", folder, "--workers", "0")
    assert found.returncode == 0, found.stdout + found.stderr
