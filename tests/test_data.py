"""data.py: tokenizer, image pipeline, readers and their errors, batching, the synthetic world."""

import hashlib
import json
from pathlib import Path

import pytest
import tiktoken
import torch
import torchvision

from data import (COLOURS, SHAPES, DataError, EpochBatches, TripletDataset, get_tokenizer, image_transform,
                  make_collate, read_triplets, synth_example, tokenize, write_synth)

from conftest import ROOT, run_cli

SUGARCREPE = ROOT.parent / "shared" / "data" / "sugarcrepe_pp"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def tiktoken_reference(tmp_path_factory, monkeypatch_module=None):
    """tiktoken's own cl100k_base, fed the shipped file through tiktoken's cache (no download)."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(
        (ROOT / "assets" / "cl100k_base.tiktoken").read_bytes())
    import os
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        from tiktoken_ext.openai_public import cl100k_base
        yield tiktoken.Encoding(**cl100k_base())
    finally:
        os.environ.pop("TIKTOKEN_CACHE_DIR") if old is None else os.environ.__setitem__("TIKTOKEN_CACHE_DIR", old)


def sugarcrepe_captions():
    texts = []
    for path in sorted(SUGARCREPE.glob("*.json")):
        for item in json.loads(path.read_text()):
            texts += [item["caption"], item["caption2"], item["negative_caption"]]
    return texts


AWKWARD = ["<|endoftext|> is just text", "Ünïcödé café — naïve", "emoji 🐶🐱", "日本語のキャプション",
           "  spaces  and\nnewlines\t", "x" * 3000, "a " * 500, ""]


def test_tokenizer_equals_tiktoken_cl100k_base(tiktoken_reference):
    texts = AWKWARD + (sugarcrepe_captions() if SUGARCREPE.is_dir() else [])
    ours = get_tokenizer().encode_ordinary_batch(texts)
    assert ours == tiktoken_reference.encode_ordinary_batch(texts)
    assert len(texts) > 10_000 or not SUGARCREPE.is_dir()


def test_special_looking_text_is_plain_text():
    ids = tokenize(["<|endoftext|>"], 16)[0]
    assert ids[0] != 100257 and (ids == 100257).sum() == 1


def test_tokenize_truncates_but_always_keeps_end_of_text():
    long_caption = " ".join(["word"] * 300)
    tokens = tokenize([long_caption, "a red circle"], 8)
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert tokens[0, -1] == 100257
    assert tokens[0, :7].tolist() == get_tokenizer().encode_ordinary(long_caption)[:7]
    expected = get_tokenizer().encode_ordinary("a red circle") + [100257]
    assert tokens[1].tolist() == expected + [0] * (8 - len(expected))


def test_image_transform_gives_normalised_square_rgb():
    transform = image_transform(32)
    gray = torch.full((1, 40, 60), 255, dtype=torch.uint8)
    rgba = torch.zeros((4, 50, 50), dtype=torch.uint8)
    out_gray, out_rgba = transform(gray), transform(rgba)
    assert out_gray.shape == out_rgba.shape == (3, 32, 32)
    torch.testing.assert_close(out_gray[:, 0, 0], (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                               / torch.tensor([0.26862954, 0.26130258, 0.27577711]))


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
    result = run_cli("train.py", "--data", path, "--batch-size", "1", "--steps", "1", "--workers", "1",
                     "--out", folder / "run", "--device", "cpu")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and expected in result.stderr


def test_special_tokens_and_long_captions_are_valid_training_text(folder):
    lines = [good_line(caption="<|endoftext|> a red circle " + "very " * 400)] * 2
    result = run_cli("train.py", "--data", write_jsonl(folder, lines), "--batch-size", "2", "--steps", "1",
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


def test_synthetic_world_is_reproducible_from_its_seed(tmp_path):
    first = write_synth(tmp_path / "a", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    second = write_synth(tmp_path / "b", n_train=5, n_test=2, seed=9, log=lambda *_: None)
    assert (first / "train.jsonl").read_text() == (second / "train.jsonl").read_text()
    assert (first / "images/train_000004.png").read_bytes() == (second / "images/train_000004.png").read_bytes()


def test_negations_keep_every_content_word_and_negate_a_present_object():
    import numpy as np
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
