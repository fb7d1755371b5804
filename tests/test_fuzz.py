"""Every file we read fails in one clear line: a mutation fuzzer over every reader of a format we accept.

Each reader gets a small valid file (data sets, checkpoints, every kind of image), then that file
as real life damages it: emptied, cut short at 25 offsets, a bit flipped at 40 places, junk inserted
at 16, replaced by random bytes, saved in the wrong encoding or with other line ends (89 mutations,
seeded). The reader must accept the file or raise the project's error, errors.DataError, as one
line naming the file. Any other exception fails the test; a crash of the process (torchvision's
PNG decoder did) fails the run.
"""

import csv
import json
import random
import warnings
from functools import cache
from types import SimpleNamespace

import pytest
import torch

import benchmarks
import gen_triplets
from data import read_image, read_triplets
from errors import DataError
from loss import SemCLIPLoss
from model import CLIP, ModelConfig, load_checkpoint
from overlap import fingerprint
from train import save_checkpoint

from conftest import SUGARCREPE_PP
from test_data import IMAGE_KINDS, write_image_kind

MUTATIONS_PER_FILE = 89


def damage_at(rng: random.Random, size: int) -> int:
    """A third near the start, a third near the end, where formats keep their structure (headers; a
    zip archive's pickle and its directory), a third anywhere (tensor data, text)."""
    near = min(size, 4096)
    return rng.choice([rng.randrange(near), size - 1 - rng.randrange(near), rng.randrange(size)])


def mutations(data: bytes, rng: random.Random) -> list:
    """(what happened, the damaged bytes), MUTATIONS_PER_FILE of them."""
    cases = [("emptied", b"")]
    ends = [1, len(data) - 1] + [len(data) * k // 24 for k in range(1, 24)]
    cases += [(f"cut at byte {end}", data[:end]) for end in ends]
    for _ in range(40):
        at = damage_at(rng, len(data))
        flipped = data[:at] + bytes([data[at] ^ 1 << rng.randrange(8)]) + data[at + 1:]
        cases.append((f"bit flipped at byte {at}", flipped))
    for _ in range(16):
        at = damage_at(rng, len(data) + 1)
        cases.append((f"junk inserted at byte {at}", data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]))
    cases += [(f"replaced by {size} random bytes", rng.randbytes(size)) for size in (4, 3000)]
    text = data.decode("utf-8", errors="replace")
    cases += [("saved as UTF-16", text.encode("utf-16")), ("saved as Latin-1", text.encode("latin-1", "replace")),
              ("Latin-1 bytes saved as UTF-8", data.decode("latin-1").encode("utf-8")),
              ("a byte-order mark in front", b"\xef\xbb\xbf" + data), ("CRLF line ends", data.replace(b"\n", b"\r\n"))]
    assert len(cases) == MUTATIONS_PER_FILE
    return cases


# ----------------------------------------------------------------------------- a small valid file of each format

TRIPLETS = [{"image": "images/0.png", "caption": "a café with two red chairs",
             "paraphrase": "two red chairs at a café", "negation": "a café with no red chairs", "id": "0"},
            {"image": "images/1.png", "caption": "a dog on a mat", "paraphrase": "on a mat, a dog",
             "negation": "a mat without a dog", "id": "1"}]


def touch(*paths):
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def triplets_csv(folder):
    return write_csv(folder / "triplets.csv", ["image", "caption", "paraphrase", "negation"],
                     [[r["image"], r["caption"], r["paraphrase"], r["negation"]] for r in TRIPLETS])


def semclip_authors_csv(folder):
    touch(*(folder / "images" / f"{i:09d}.jpg" for i in range(10)))
    return write_csv(folder / "ccneg.csv", ["image_number", "caption", "negation", "paraphrased"],
                     [[i, f"caption {i} of a café", f"no café {i}", f"a café, caption {i}"] for i in range(10)])


def cc_neg_preprocessed_pt(folder):
    names = [f"{i:09d}.jpg" for i in range(3)]
    touch(*(folder / benchmarks.CCNEG_IMAGES / name for name in names))
    torch.save({"image_paths": [f"/workspace/datasets/cc3m/{name}" for name in names],
                "annotations": [{"json": {"caption": f"a café {i}"}, "sop_data": {"negative-prompt": f"no café, {i}"}}
                                for i in range(3)]}, folder / benchmarks.CCNEG_FILE)
    return folder / benchmarks.CCNEG_FILE


def sugarcrepe_pp_json(folder):
    for category in benchmarks.SCPP_CATEGORIES:  # the first two items of each official file
        items = json.loads((SUGARCREPE_PP / f"{category}.json").read_text())[:2]
        (folder / f"{category}.json").write_text(json.dumps(items, ensure_ascii=False))
        touch(*(folder / "images" / item["filename"] for item in items))
    return folder / "replace_att.json"


def negbench_mcq_csv(folder):
    touch(*(folder / "val2017" / f"{i}.jpg" for i in range(3)))
    return write_csv(folder / "mcq.csv", ["image_path", "caption_0", "caption_1", "caption_2", "caption_3",
                                          "correct_answer", "correct_answer_template"],
                     [[f"val2017/{i}.jpg", "a café", "no café", "a dog", "no dog", i, "Negation"] for i in range(3)])


def negbench_retrieval_csv(folder):
    touch(*(folder / "val2017" / f"{i}.jpg" for i in range(3)))
    return write_csv(folder / "retrieval.csv", ["filepath", "captions"],
                     [[f"/coco/val2017/{i}.jpg", str([f"a café {i}", f"no dog, {i}", "it's"])] for i in range(3)])


CONFIG = ModelConfig(image_size=16, patch_size=8, vision_width=64, vision_layers=1, vision_heads=1, text_width=64,
                     text_layers=1, text_heads=1, context_length=8, vocab_size=64, eot_token=63, embed_dim=16)


@cache
def weights():
    """A small CLIP with CLIP's 64-wide heads, so published layouts can hold it."""
    torch.manual_seed(0)
    return CLIP(CONFIG).state_dict()


def train_py_checkpoint(folder):
    model, loss_fn = CLIP(CONFIG), SemCLIPLoss(CONFIG.embed_dim)
    model.load_state_dict(weights())
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(folder, 1, model, loss_fn, optimizer, 1, SimpleNamespace(out=folder), "cl100k_base",
                    fingerprint(TRIPLETS))
    (folder / "ckpt_step1.pt").unlink()  # ckpt.pt is a hard link to it
    return folder / "ckpt.pt"


def open_clip_bin(folder):
    torch.save(weights(), folder / "open_clip_pytorch_model.bin")
    return folder / "open_clip_pytorch_model.bin"


def open_clip_training_checkpoint(folder):
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in weights().items()}}, folder / "epoch_1.pt")
    return folder / "epoch_1.pt"


def safetensors_file(folder):
    safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    safetensors.save_file(weights(), folder / "open_clip_model.safetensors")
    return folder / "open_clip_model.safetensors"


def openai_torchscript(folder):
    """OpenAI's ViT-B-32.pt layout: a TorchScript module holding the weights under their names."""
    root = torch.nn.Module()
    for name, tensor in {**weights(), "input_resolution": torch.tensor(16)}.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, tensor)
    with warnings.catch_warnings():  # torch.jit.script is deprecated; OpenAI's file is TorchScript anyway
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(folder / "ViT-B-32.pt"))
    return folder / "ViT-B-32.pt"


def both_texts(path):
    return read_triplets(path, ("paraphrase", "negation"))


def image_file(kind):
    return lambda folder: write_image_kind(folder, kind)[0]


FORMATS = {  # name: (write a small valid file into a folder and return its path, the public reader)
    "triplets JSONL": (lambda folder: write_jsonl(folder / "triplets.jsonl", TRIPLETS), both_texts),
    "triplets CSV": (triplets_csv, both_texts),
    "the SemCLIP authors' CSV": (semclip_authors_csv, lambda p: benchmarks.read_ccneg_csv(p, p.parent / "images")),
    "CC-Neg .pt": (cc_neg_preprocessed_pt, lambda p: benchmarks.read_ccneg(p.parent, split_size=2)),
    "SugarCrepe++ JSON": (sugarcrepe_pp_json, lambda p: benchmarks.read_sugarcrepe_pp(p.parent)),
    "NegBench MCQ CSV": (negbench_mcq_csv, lambda p: benchmarks.read_negbench_mcq(p, p.parent)),
    "NegBench retrieval CSV": (negbench_retrieval_csv,
                               lambda p: benchmarks.read_negbench_retrieval(p, p.parent / "val2017")),
    "train.py checkpoint": (train_py_checkpoint, load_checkpoint),
    "open_clip .bin": (open_clip_bin, load_checkpoint),
    "open_clip training checkpoint": (open_clip_training_checkpoint, CLIP.from_pretrained),
    ".safetensors": (safetensors_file, CLIP.from_pretrained),
    "OpenAI TorchScript": (openai_torchscript, load_checkpoint),
    "gen_triplets.py input JSONL": (
        lambda folder: write_jsonl(folder / "captions.jsonl", [{k: r[k] for k in ("image", "caption", "id")}
                                                              for r in TRIPLETS]),
        gen_triplets.read_captions),
    "gen_triplets.py input CSV": (
        lambda folder: write_csv(folder / "captions.csv", ["image", "caption", "id"],
                                 [[r["image"], r["caption"], r["id"]] for r in TRIPLETS]),
        gen_triplets.read_captions),
    "gen_triplets.py output, read back on resume": (
        lambda folder: write_jsonl(folder / "triplets.jsonl", [{**r, "paraphrase_method": "rephrase"}
                                                               for r in TRIPLETS]),
        lambda p: gen_triplets.open_log(p, False, str)),
    **{f"{kind} image": (image_file(kind), lambda p: read_image(p, "triplets.jsonl:1")) for kind in IMAGE_KINDS},
}


# ----------------------------------------------------------------------------- the fuzzer

def test_the_fuzzer_runs_2581_mutations():
    assert len(FORMATS) * MUTATIONS_PER_FILE == (15 + len(IMAGE_KINDS)) * 89 == (15 + 14) * 89 == 2581


@pytest.mark.parametrize("name", FORMATS)
def test_a_damaged_file_is_read_or_fails_in_one_line_naming_it(name, tmp_path):
    write, read = FORMATS[name]
    path = write(tmp_path)
    read(path)  # the valid file reads
    failures = []
    for what, data in mutations(path.read_bytes(), random.Random(15)):
        path.write_bytes(data)
        with warnings.catch_warnings(record=True) as warned:  # a warning is one more line on stderr
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", ResourceWarning)  # open_log's file, open for a run, dropped here
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                    DeprecationWarning)  # torchvision 0.29's, on every decode; hidden by default
            try:
                read(path)
            except DataError as error:
                if len(str(error).splitlines()) != 1 or str(path) not in str(error):
                    failures.append(f"{what}: not one line naming the file: {str(error)!r}")
            except Exception as error:  # noqa: BLE001 -- what this test is here to find
                failures.append(f"{what}: {type(error).__name__}: {error}")
        failures += [f"{what}: warns {warning.message}" for warning in warned]
    assert not failures, f"{len(failures)} of {MUTATIONS_PER_FILE} mutations of {name}:\n" + "\n".join(failures)
