"""eval.py and benchmarks.py: metrics on hand-checkable cases, each benchmark's files as released, the command line."""

import csv
import dataclasses
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import benchmarks
import eval as evaluation
from data import CLIP_MEAN, CLIP_STD, image_transform, read_image
from errors import DataError
from eval import format_table, recall_at
from model import ModelConfig, load_checkpoint
from synth import SYNONYMS, synth_classes
from tokenizer import get_tokenizer, tokenize

from conftest import SUGARCREPE_PP, help_examples, run_python


def test_recall_counts_a_hit_for_any_item_with_the_same_caption_text():
    captions = ["a red circle", "a blue square", "a red circle"]
    similarity = torch.tensor([[0.1, 0.9, 0.8],   # top-1 is item 1 (other text): miss at 1, hit at 2
                               [0.2, 0.1, 0.9],   # top-1 is item 2 (other text): miss
                               [0.9, 0.1, 0.2]])  # top-1 is item 0, same text: hit
    assert recall_at(similarity, captions, captions, 1) == 1 / 3
    assert recall_at(similarity, captions, captions, 2) == 2 / 3


def test_format_table_aligns_rows():
    table = format_table({"clip": {"a": 0.5, "b": 1.0}, "semclip": {"a": 0.25, "b": 0.0}}, ["a", "b"])
    assert table.splitlines()[1] == "clip      0.500   1.000" and len({len(l) for l in table.splitlines()}) == 1


def test_eval_cli_synth_writes_results_json(synth_dir, tmp_path):
    trained = run_python("train.py", "--data", synth_dir / "train.jsonl", "--batch-size", "16", "--steps", "1",
                      "--workers", "0", "--device", "cpu", "--out", tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_python("eval.py", "--bench", "synth", "--ckpt", tmp_path / "ckpt.pt", "--data-root", synth_dir,
                     "--out", tmp_path / "results.json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["bench"] == "synth" and results["n"] == 40 and results["checkpoint"].endswith("ckpt.pt")
    names = ["orig_over_neg", "t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "para_t2i_r1", "syn_t2i_r1", "mcq",
             "mcq_affirmation", "mcq_negation", "mcq_hybrid", "mcq_unseen_forms", "mcq_unseen_negation",
             "mcq_unseen_hybrid", "trueneg_over_falseaff", "trueneg_over_falseneg", "zeroshot_orig", "zeroshot_neg"]
    assert list(results["metrics"]) == names
    assert all(0.0 <= value <= 1.0 for value in results["metrics"].values())
    # disjoint images (train_*.png vs test_*.png): no overlap, no warning; shared captions are only counted
    assert results["train_overlap"] == 0 and "warning" not in result.stderr
    assert results["train_caption_overlap"] == shared_captions(synth_dir / "train.jsonl", synth_dir / "test.jsonl")


def shared_captions(train_file, test_file):
    """Test items whose caption, lower-cased with single spaces, is a training caption."""
    def captions(path):
        return [" ".join(json.loads(line)["caption"].lower().split()) for line in path.read_text().splitlines()]
    return sum(caption in set(captions(train_file)) for caption in captions(test_file))


def test_eval_counts_and_warns_about_test_images_the_model_trained_on(synth_dir, tmp_path):
    train = [json.loads(line) for line in (synth_dir / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (synth_dir / "test.jsonl").read_text().splitlines()]
    leaked = [{**r, "image": str(synth_dir / r["image"])} for r in test[5:8]]  # 3 test images, by absolute path
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in [{**r, "image": str(synth_dir / r["image"])}
                                                            for r in train[:29]] + leaked))
    trained = run_python("train.py", "--data", mixed, "--batch-size", "16", "--steps", "1", "--workers", "0",
                         "--device", "cpu", "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    result = run_python("eval.py", "--bench", "synth", "--ckpt", tmp_path / "run/ckpt.pt", "--data-root", synth_dir,
                        "--out", tmp_path / "results.json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train_overlap"] == 3
    assert results["train_caption_overlap"] == shared_captions(mixed, synth_dir / "test.jsonl")
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert "synth" in warning and "3 of 40" in warning


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run_python("eval.py", "--bench", "synth", "--ckpt", tmp_path / "none.pt")
    assert result.returncode == 1 and "checkpoint does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the released benchmarks
# A planted model: an image's embedding is looked up by its solid colour (which encodes an id), a
# text's by its words, so every metric can be checked against a count by hand.


def random_vector(key: str, dim=8):
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.nn.functional.normalize(torch.randn(dim, generator=generator), dim=0)


def basis(i, dim=8):
    return torch.eye(dim)[i]


class PlantedModel(torch.nn.Module):
    def __init__(self, images=None, texts=None):
        super().__init__()
        self.config = dataclasses.replace(ModelConfig.preset("tiny"), context_length=77)
        self.images, self.texts = images or {}, texts or {}
        self.seen_texts = []

    def encode_image(self, images):
        pixels = (images[:, :, 16, 16] * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)) * 255
        ids = (pixels / 16).round().long()
        ids = ids[:, 0] + 16 * ids[:, 1] + 256 * ids[:, 2]
        return torch.stack([self.images.get(int(i), random_vector(f"image {int(i)}")) for i in ids])

    def encode_text(self, tokens):
        encoding = get_tokenizer()
        texts = [encoding.decode(row[: row.index(encoding.eot_token)]) for row in tokens.tolist()]
        self.seen_texts += texts
        return torch.stack([self.texts.get(text, random_vector(text)) for text in texts])


def id_colour(i):
    return (16 * (i % 16), 16 * (i // 16 % 16), 16 * (i // 256))


def write_image(path, i, size=(40, 48)):
    """A solid image whose colour encodes id `i` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = torch.tensor(id_colour(i), dtype=torch.uint8).view(3, 1, 1).expand(3, *size).contiguous()
    if path.suffix == ".jpg":
        torchvision.io.write_jpeg(image, str(path), quality=95)
    else:
        torchvision.io.write_png(image, str(path))


def write_ccneg(root, samples, decoys=0, images=True):
    """CoN-CLIP's layout: ccneg_preprocessed.pt with the authors' absolute paths, images by file name."""
    paths, annotations = [], []
    for i, (caption, negation) in enumerate([("decoy", "no decoy")] * decoys + samples):
        name = f"{i:09d}.jpg"
        paths.append(f"/workspace/datasets/cc3m/{name}")
        annotations.append({"json": {"caption": caption, "key": name}, "sop_data": {"negative-prompt": negation}})
        if images and i >= decoys:
            write_image(root / benchmarks.CCNEG_IMAGES / name, i)
    torch.save({"image_paths": paths, "annotations": annotations}, root / benchmarks.CCNEG_FILE)
    return root


def test_cc_neg_counts_strict_wins_and_ties_by_hand(tmp_path):
    samples = [("a dog on grass", "a dog, not on grass"),          # image = caption: a win
               ("a red car", "a red car, "),                        # negation minus commas = caption: a tie
               ("a cat", "no cat"),                                 # image = negation: a loss
               ("two birds", "two birds, without a nest")]          # image = caption: a win
    root = write_ccneg(tmp_path, samples, decoys=2)
    texts = {"a dog on grass": basis(0), "a dog not on grass": basis(1), "a red car": basis(2),
             "a cat": basis(3), "no cat": basis(4), "two birds": basis(5), "two birds without a nest": basis(6)}
    images = {2: basis(0), 3: basis(2), 4: basis(4), 5: basis(5)}
    records = benchmarks.read_ccneg(root, split_size=4)
    assert [r["negation"] for r in records] == ["a dog not on grass", "a red car", "no cat", "two birds without a nest"]
    n, metrics = evaluation.evaluate_cc_neg(PlantedModel(images, texts), "cl100k_base", records)
    assert n == 4 and metrics == {"orig_over_neg": 2 / 4, "ties": 1 / 4}


def test_cc_neg_test_split_is_the_last_40000_samples(tmp_path):
    samples = [(f"caption {i}", f"negation, {i}") for i in range(40_000)]
    root = write_ccneg(tmp_path, samples, decoys=3, images=False)
    for i in range(3, 6):
        write_image(root / benchmarks.CCNEG_IMAGES / f"{i:09d}.jpg", i)
    records = benchmarks.read_ccneg(root, limit=3)  # the split starts at sample 3: decoys 0-2 have no images
    assert [r["caption"] for r in records] == ["caption 0", "caption 1", "caption 2"]
    assert records[0]["image"] == root / benchmarks.CCNEG_IMAGES / "000000003.jpg"


def test_cc_neg_csv_uses_the_authors_seed_42_split(tmp_path):
    with open(tmp_path / "ccneg.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image_number", "caption", "negation", "paraphrased"])
        writer.writerows([[i, f"caption {i}", f"negation {i}", f"paraphrase {i}"] for i in range(30)])
    for i in range(30):
        write_image(tmp_path / "images" / f"{i:09d}.jpg", i)
    records = benchmarks.read_ccneg_csv(tmp_path / "ccneg.csv", tmp_path / "images")
    # pandas' df.sample(frac=1, random_state=42) draws RandomState(42).choice(n, n, replace=False);
    # train, validation, test = 24, 3, 3 rows of that order
    expected = np.random.RandomState(42).choice(30, 30, replace=False)[27:]
    assert [r["caption"] for r in records] == [f"caption {i}" for i in expected]
    assert records[0]["image"] == tmp_path / "images" / f"{expected[0]:09d}.jpg"


@pytest.fixture(scope="module")
def scpp_root(tmp_path_factory):
    """The five official SugarCrepe++ files with a generated image per COCO file name."""
    root = tmp_path_factory.mktemp("scpp")
    for category in benchmarks.SCPP_CATEGORIES:
        shutil.copy(SUGARCREPE_PP / f"{category}.json", root)
    names = sorted({item["filename"] for c in benchmarks.SCPP_CATEGORIES
                    for item in json.loads((SUGARCREPE_PP / f"{c}.json").read_text())})
    for i, name in enumerate(names):
        write_image(root / "images" / name, i, size=(8, 8))
    return root, {name: i for i, name in enumerate(names)}


def test_sugarcrepe_pp_metrics_equal_a_hand_count(scpp_root):
    root, image_ids = scpp_root
    model = PlantedModel()
    n, metrics = evaluation.evaluate_sugarcrepe_pp(model, "cl100k_base", benchmarks.read_sugarcrepe_pp(root))
    assert n == 4757
    expected = {}
    for category in benchmarks.SCPP_CATEGORIES:
        counts = dict.fromkeys(["itt", "tot", "img_p1", "img_p2"], 0)
        items = json.loads((SUGARCREPE_PP / f"{category}.json").read_text())
        for item in items:
            image = random_vector(f"image {image_ids[item['filename']]}")
            p1, p2, neg = (random_vector(item[key].strip()) for key in ("caption", "caption2", "negative_caption"))
            i1, i2, i_neg = float(image @ p1), float(image @ p2), float(image @ neg)
            counts["img_p1"] += i1 > i_neg
            counts["img_p2"] += i2 > i_neg
            counts["itt"] += i1 > i_neg and i2 > i_neg
            counts["tot"] += float(p1 @ p2) > float(p1 @ neg) and float(p1 @ p2) > float(p2 @ neg)
        expected.update({f"{category}/{name}": count / len(items) for name, count in counts.items()})
    for name in ("itt", "tot", "img_p1", "img_p2"):
        expected[f"mean/{name}"] = sum(expected[f"{c}/{name}"] for c in benchmarks.SCPP_CATEGORIES) / 5
    assert metrics.keys() == expected.keys()
    assert metrics == expected
    assert not any(text != text.strip() for text in model.seen_texts)  # trailing spaces and newlines stripped


def test_sugarcrepe_pp_items_whose_negative_is_the_caption_never_count(scpp_root):
    root, _ = scpp_root
    swap_obj = benchmarks.read_sugarcrepe_pp(root)["swap_obj"]
    same = [r for r in swap_obj if r["negation"] == r["caption"]]
    assert [r["where"].rsplit("(", 1)[1] for r in same] == ["id 2)", "id 8)"]
    n, metrics = evaluation.evaluate_sugarcrepe_pp(PlantedModel(), "cl100k_base", {"swap_obj": same})
    assert n == 2  # sim(., P1) == sim(., N) is not strictly >, so Img-P1, ITT and TOT can never hold
    assert [metrics[f"swap_obj/{name}"] for name in ("itt", "tot", "img_p1")] == [0.0, 0.0, 0.0]


def test_zeroshot_original_and_negated_prompts_on_a_cifar10_folder(tmp_path, monkeypatch):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    colour_ids = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3]   # what each image shows
    labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 2]       # the data set's label
    pixels = np.stack([np.broadcast_to(np.array(id_colour(i), np.uint8)[:, None], (3, 1024)).reshape(-1)
                       for i in colour_ids])
    import pickle
    (folder / "test_batch").write_bytes(pickle.dumps({"data": pixels, "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)  # no real MD5s here
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    # An image showing class c is the prompt "this is a photo of a {c}"; the negated prompt of class
    # k is planted on the original prompt of class k+1, so negated prompts predict c-1.
    texts = {f"this is a photo of a {c}": basis(i, 10) for i, c in enumerate(classes)}
    texts.update({f"this is not a photo of a {c}": basis((i + 1) % 10, 10) for i, c in enumerate(classes)})
    model = PlantedModel({i: basis(i, 10) for i in range(10)}, texts)
    n, metrics = evaluation.evaluate_zeroshot(model, "cl100k_base", benchmarks.read_zeroshot("cifar10", tmp_path))
    orig = sum(c == y for c, y in zip(colour_ids, labels)) / 12                 # 11 of 12
    neg = sum((c - 1) % 10 == y for c, y in zip(colour_ids, labels)) / 12       # 1 of 12: shows 3, labelled 2
    assert n == 12 and metrics == pytest.approx({"orig_acc": orig, "neg_acc": neg, "delta": orig - neg})


def test_negbench_mcq_accuracy_and_per_template_breakdown(tmp_path):
    rows = [("a dog", ["a dog", "no dog", "a cat", "no cat"], 0, "positive"),
            ("no dog", ["a dog", "no dog", "a cat", "no cat"], 1, "negative"),
            ("a cat", ["a dog", "no dog", "a cat", "no cat"], 3, "negative")]  # the model picks 2: wrong
    with open(tmp_path / "mcq.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image_path", "caption_0", "caption_1", "caption_2", "caption_3", "correct_answer",
                         "correct_answer_template"])
        for i, (_, captions, answer, template) in enumerate(rows):
            write_image(tmp_path / "val2017" / f"{i}.png", i)
            writer.writerow([f"val2017/{i}.png", *captions, answer, template])
    texts = {"a dog": basis(0), "no dog": basis(1), "a cat": basis(2), "no cat": basis(3)}
    model = PlantedModel({i: texts[shows] for i, (shows, *_) in enumerate(rows)}, texts)
    n, metrics = evaluation.evaluate_negbench_mcq(model, "cl100k_base",
                                                  benchmarks.read_negbench_mcq(tmp_path / "mcq.csv", tmp_path))
    assert n == 3 and metrics == {"accuracy": 2 / 3, "positive/accuracy": 1.0, "negative/accuracy": 0.5}


# NegBench's retrieval files (its training/data.py CsvImageCaptionDataset, evaluation/retrieval.py): a row per
# image, `filepath` (its authors' absolute paths, or relative ones) and `captions`, str() of a Python list
# as pandas writes it; every caption is a text -> image query whose one positive is its own row's image.

def write_negbench_retrieval(folder, rows):
    """Both files, the original and the negated captions, with NegBench's names and columns; rows: per file
    [(filepath, captions)]."""
    for name, file_rows in zip(benchmarks.NEGBENCH_RETRIEVAL.values(), rows):
        with open(folder / name, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["filepath", "captions"])
            writer.writerows([path, str(captions)] for path, captions in file_rows)
    return folder


def retrieval_rows(negated, folder="/datasets/coco/val2017"):
    """14 COCO-named images in `folder` (by default an absolute path of NegBench's authors), 2-3 queries each."""
    return [(f"{folder}/{i:012d}.jpg", [f"{'no' if negated else 'a'} thing {i} {q}" for q in range(2 + i % 2)])
            for i in range(14)]


def recall_by_hand(scores, k):
    """scores: per query (its own image's score, every image's score); a hit when fewer than k images beat it."""
    return sum(sum(other > own for other in row) < k for own, row in scores) / len(scores)


def test_negbench_retrieval_recall_equals_a_count_by_hand(tmp_path):
    """Queries "... 0" are planted on their own image, the others are random vectors."""
    rows = [retrieval_rows(negated=False), retrieval_rows(negated=True, folder="val2017")]  # absolute, relative paths
    write_negbench_retrieval(tmp_path, rows)
    for i in range(14):
        write_image(tmp_path / "val2017" / f"{i:012d}.jpg", i)
    images = {i: random_vector(f"image {i}") for i in range(14)}
    texts = {caption: images[i] for file_rows in rows for i, (_, captions) in enumerate(file_rows)
             for caption in captions if caption.endswith(" 0")}
    files = {name: benchmarks.read_negbench_retrieval(tmp_path / file, tmp_path / "val2017" if name == "original"
                                                      else tmp_path)
             for name, file in benchmarks.NEGBENCH_RETRIEVAL.items()}
    n, metrics = evaluation.evaluate_negbench_retrieval(PlantedModel(images, texts), "cl100k_base", files)
    expected = {}
    for name, file_rows in zip(benchmarks.NEGBENCH_RETRIEVAL, rows):
        scores = [(float(images[i] @ texts.get(c, random_vector(c))),
                   [float(images[j] @ texts.get(c, random_vector(c))) for j in range(14)])
                  for i, (_, captions) in enumerate(file_rows) for c in captions]
        expected.update({f"{name}/t2i_r{k}": recall_by_hand(scores, k) for k in (1, 5, 10)})
    assert n == 2 * (7 * 2 + 7 * 3) and metrics == expected
    assert 0 < metrics["original/t2i_r1"] < metrics["original/t2i_r5"] < metrics["original/t2i_r10"] < 1


def test_negbench_retrieval_cli_equals_a_count_by_hand_with_a_real_model(tiny_ckpt, tmp_path):
    rows = [retrieval_rows(negated=False), retrieval_rows(negated=True)]
    write_negbench_retrieval(tmp_path, rows)
    for i in range(14):
        write_image(tmp_path / "coco" / "val2017" / f"{i:012d}.jpg", 40 * i)
    result = run_python("eval.py", "--bench", "negbench_retrieval", "--ckpt", tiny_ckpt, "--data-root", tmp_path,
                        "--image-root", tmp_path / "coco" / "val2017", "--device", "cpu", "--out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    model, _ = load_checkpoint(tiny_ckpt)
    transform = image_transform(model.config.image_size)
    with torch.no_grad():
        files = [tmp_path / "coco" / "val2017" / f"{i:012d}.jpg" for i in range(14)]
        image = model.encode_image(torch.stack([transform(read_image(file, "")) for file in files]))
        expected = {}
        for name, file_rows in zip(benchmarks.NEGBENCH_RETRIEVAL, rows):
            queries = [(i, c) for i, (_, captions) in enumerate(file_rows) for c in captions]
            text = model.encode_text(tokenize([c for _, c in queries], model.config.context_length))
            scores = [(float(image[i] @ t), [float(image[j] @ t) for j in range(14)])
                      for (i, _), t in zip(queries, text)]
            assert min(abs(own - other) for own, row in scores for other in row if other != own) > 1e-5  # no near-ties
            expected.update({f"{name}/t2i_r{k}": recall_by_hand(scores, k) for k in (1, 5, 10)})
    assert results["bench"] == "negbench_retrieval" and results["n"] == 70 and results["metrics"] == expected
    assert "original" in result.stdout and "negated" in result.stdout and "t2i_r10" in result.stdout


@pytest.mark.parametrize("captions, line", [("a dog, a cat", 3), ("__import__('os').system('echo hi')", 3),
                                            ("[1, 2]", 3), ("['a dog'", 3)])
def test_negbench_retrieval_captions_that_are_no_list_of_texts_are_one_line(captions, line, tmp_path):
    (tmp_path / "a.jpg").touch()
    path = tmp_path / "retrieval.csv"
    path.write_text(f'filepath,captions\na.jpg,"[\'a dog\']"\na.jpg,"{captions}"\n')
    with pytest.raises(DataError, match=rf"retrieval.csv:{line}: needs filepath and captions, a list of texts"):
        benchmarks.read_negbench_retrieval(path, tmp_path)


def test_bench_all_cc_neg_equals_synth_on_the_same_images_and_captions(synth_dir, tiny_ckpt, tmp_path):
    """The bar: a CC-Neg-format copy of the synthetic test split scores what --bench synth says."""
    root = tmp_path / "data"
    (root / "synth").mkdir(parents=True)
    (root / "synth" / "images").symlink_to(synth_dir / "images")
    records = [json.loads(line) for line in (synth_dir / "test.jsonl").read_text().splitlines()]
    for record in records:  # CoN-CLIP's loader drops commas from negations: give synth the same texts
        record["negation"] = record["negation"].replace(",", "")
    (root / "synth" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ccneg = root / "cc_neg"
    (ccneg / benchmarks.CCNEG_IMAGES).mkdir(parents=True)
    for record in records:
        (ccneg / benchmarks.CCNEG_IMAGES / Path(record["image"]).name).symlink_to(synth_dir / record["image"])
    decoy = {"json": {"caption": "not in the test split"}, "sop_data": {"negative-prompt": "no"}}
    torch.save({"image_paths": ["/workspace/datasets/cc3m/missing.jpg"] * 5
                + [f"/workspace/datasets/cc3m/{Path(r['image']).name}" for r in records],
                "annotations": [decoy] * 5 + [{"json": {"caption": r["caption"]},
                                               "sop_data": {"negative-prompt": r["negation"]}} for r in records]},
               ccneg / benchmarks.CCNEG_FILE)
    result = run_python("eval.py", "--bench", "all", "--ckpt", tiny_ckpt, "--data-root", root, "--device", "cpu",
                     "--split-size", len(records), "--out", tmp_path / "results.json")
    assert result.returncode == 0, result.stderr
    synth = json.loads((tmp_path / "results.synth.json").read_text())
    cc_neg = json.loads((tmp_path / "results.cc_neg.json").read_text())
    assert cc_neg["bench"] == "cc_neg" and cc_neg["n"] == synth["n"] == 40
    assert list(cc_neg["metrics"]) == ["orig_over_neg", "ties"]
    assert cc_neg["metrics"]["orig_over_neg"] * 40 == round(synth["metrics"]["orig_over_neg"] * 40)  # same count
    assert "orig_over_neg" in result.stdout and "skipped" in result.stdout
    for skipped in ("sugarcrepe_pp", "zeroshot/cifar10", "negbench_mcq", "negbench_retrieval"):
        assert f"skipped {skipped}" in result.stdout


def test_sugarcrepe_pp_cli_writes_every_category_metric(scpp_root, tiny_ckpt, tmp_path):
    root, _ = scpp_root
    result = run_python("eval.py", "--bench", "sugarcrepe_pp", "--ckpt", tiny_ckpt, "--data-root", root,
                     "--limit", "4", "--device", "cpu", "--out", tmp_path / "results.json")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n"] == 20 and len(results["metrics"]) == 24 and "swap_obj/itt" in results["metrics"]
    assert "mean/img_p2" in results["metrics"] and "replace_rel" in result.stdout
    assert results["train_overlap"] is None and results["train_caption_overlap"] is None  # no fingerprint


@pytest.mark.parametrize("bench, setup, expected", [
    ("cc_neg", lambda root: None, "ccneg_preprocessed.pt: file does not exist"),
    ("cc_neg", lambda root: torch.save({"image_paths": [Path("/x.jpg")], "annotations": [{}]},
                                       root / "ccneg_preprocessed.pt"),
     "cannot be read with torch.load(weights_only=True)"),
    ("cc_neg", lambda root: write_ccneg(root, [("a", "b"), ("c", "d")], images=False),
     "000000000.jpg does not exist (2 of 2 images missing); put the images there or pass --image-dir"),
    ("sugarcrepe_pp", lambda root: None, "replace_att.json: file does not exist"),
    ("zeroshot", lambda root: None, "cifar10 test split not found; fetch it once with"),
])
def test_missing_or_bad_data_is_one_clear_line(bench, setup, expected, tiny_ckpt, tmp_path):
    setup(tmp_path)
    result = run_python("eval.py", "--bench", bench, "--ckpt", tiny_ckpt, "--data-root", tmp_path, "--split-size", 2)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- synth: negation meaning
# Two planted readers of the world's language, each a model whose every score is known by hand.
# An image of objects O is the indicator of O (dims 0-23) plus, for the reader of negation, the
# indicator of the absent objects ("no o" is true of it, dims 24-47).
#   reads_negation: a text is its affirmed objects (dims 0-23) + its negated ones (dims 24-47): a true
#       text shares dimensions with the image, a false one fewer, so the true choice always wins.
#   shortcut ("a negation word pushes away"): a text with "no"/"not"/"without" is -e_48, every
#       image +e_48; other texts are their objects + e_48. Negated texts lose to everything.

SYNTH_IMAGES = [["red circle"], ["blue square"], ["green triangle", "yellow cross"], ["white circle"],
                ["purple square"], ["red cross"]]   # no image's objects contain another's: t2i is exact


class WordModel(PlantedModel):
    def __init__(self, reads_negation):
        super().__init__()
        self.reads_negation, self.classes = reads_negation, synth_classes()

    def encode_image(self, images):
        pixels = (images[:, :, 16, 16] * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)) * 255
        rows = []
        for i in (pixels[:, 0] / 16).round().long().tolist():
            vector = torch.zeros(49)
            for o in SYNTH_IMAGES[i]:
                vector[self.classes.index(o)] = 1
            if self.reads_negation:
                vector[24:48] = 1 - vector[:24]
            else:
                vector[48] = 1
            rows.append(torch.nn.functional.normalize(vector, dim=0))
        return torch.stack(rows)

    def encode_text(self, tokens):
        encoding = get_tokenizer()
        rows = []
        for row in tokens.tolist():
            text = encoding.decode(row[: row.index(encoding.eot_token)])
            self.seen_texts.append(text)
            words = [WORDS.get(w, w) for w in text.replace(",", "").split()]
            vector = torch.zeros(49)
            for i in range(len(words) - 1):
                name = f"{words[i]} {words[i + 1]}"
                if name in self.classes:
                    negated = words[i - 1] == "no" or words[i - 2:i] in (["not", "a"], ["without", "a"])
                    vector[self.classes.index(name) + 24 * negated] = 1
            if not self.reads_negation:
                vector = -torch.eye(49)[48] if {"no", "not", "without"} & set(words) else vector + torch.eye(49)[48]
            rows.append(torch.nn.functional.normalize(vector, dim=0))
        return torch.stack(rows)


WORDS = {synonym: word for word, synonym in SYNONYMS.items()}


@pytest.fixture(scope="module")
def planted_world(tmp_path_factory):
    """Six solid test images (colour = index) with the objects above, captions in the world's words."""
    root = tmp_path_factory.mktemp("planted_world")
    lines = []
    for i, objects in enumerate(SYNTH_IMAGES):
        write_image(root / "images" / f"test_{i}.png", i, size=(64, 64))
        caption = " and ".join(f"a {o}" for o in objects)
        lines.append(json.dumps({"image": f"images/test_{i}.png", "caption": caption, "paraphrase": caption,
                                 "negation": f"no {objects[0]}", "objects": objects}))
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_synth_negation_metrics_of_a_model_that_reads_negation_are_all_one(planted_world):
    n, metrics = evaluation.evaluate_synth(WordModel(reads_negation=True), "cl100k_base", planted_world)
    new = ["syn_t2i_r1", "mcq", "mcq_affirmation", "mcq_negation", "mcq_hybrid", "mcq_unseen_forms",
           "mcq_unseen_negation", "mcq_unseen_hybrid", "trueneg_over_falseaff", "trueneg_over_falseneg"]
    assert n == 6 and {name: metrics[name] for name in ["orig_over_neg", "t2i_r1"] + new} == dict.fromkeys(
        ["orig_over_neg", "t2i_r1"] + new, 1.0)


def test_synth_negation_metrics_catch_the_negation_word_shortcut(planted_world):
    model = WordModel(reads_negation=False)
    n, metrics = evaluation.evaluate_synth(model, "cl100k_base", planted_world)
    # items 0 and 3 ask for an affirmation (item i: kind i % 3), which the shortcut gets right; for a
    # negation or a hybrid every choice but the false affirmation "a Y" carries a negation word: "a Y" wins
    assert metrics["orig_over_neg"] == 1.0 and metrics["t2i_r1"] == 1.0 and metrics["syn_t2i_r1"] == 1.0
    assert (metrics["mcq"], metrics["mcq_affirmation"], metrics["mcq_negation"], metrics["mcq_hybrid"]) == \
        (2 / 6, 1.0, 0.0, 0.0)
    assert (metrics["mcq_unseen_forms"], metrics["mcq_unseen_negation"], metrics["mcq_unseen_hybrid"]) == (2 / 6, 0, 0)
    # the true negation loses to the false affirmation, and ties (not strictly >) with the false negation
    assert metrics["trueneg_over_falseaff"] == 0.0 and metrics["trueneg_over_falseneg"] == 0.0
    assert "a crimson disc" in model.seen_texts   # syn_t2i_r1 queries: every colour and shape in its synonym
def test_help_examples_parse():
    result = run_python("eval.py", "--help")
    examples = help_examples(result.stdout, "eval.py")
    assert result.returncode == 0 and len(examples) >= 6
    for argv in examples:
        evaluation.parse_args(argv)


@pytest.mark.parametrize("flag, value, why", [
    ("--batch-size", "0", "0 is not >= 1"), ("--workers", "-1", "-1 is not >= 0"), ("--limit", "0", "0 is not >= 1"),
    ("--split-size", "2.5", "'2.5' is not an integer"), ("--batch-size", "nan", "'nan' is not an integer"),
])
def test_a_bad_number_is_argparses_usage_and_exit_2(flag, value, why, capsys):
    with pytest.raises(SystemExit) as stopped:
        evaluation.parse_args(["--bench", "synth", flag, value])
    error = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and error[0].startswith("usage: ")
    assert error[-1].endswith(f": error: argument {flag}: {why}")


def test_data_without_negations_is_explained_without_training_flags(tmp_path):
    """eval trains nothing: its messages say what the bench needs, not which --loss to train with."""
    (tmp_path / "test.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a cat", "paraphrase": "cat"}) + "\n")
    with pytest.raises(DataError) as synth:
        evaluation.evaluate_synth(PlantedModel(), "cl100k_base", tmp_path)
    (tmp_path / "ccneg.csv").write_text("image_number,caption\n1,a cat\n")
    with pytest.raises(DataError) as cc_neg:
        benchmarks.read_ccneg_csv(tmp_path / "ccneg.csv", tmp_path)
    assert "missing key 'negation'" in str(synth.value)
    assert "--bench synth scores paraphrases and negations" in str(synth.value)
    assert "cc_neg scores each caption against its negation" in str(cc_neg.value)
    assert "--loss" not in str(synth.value) + str(cc_neg.value)
