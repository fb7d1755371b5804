"""Benchmark readers: each benchmark's files as their authors release them, checked, as records.

Every reader returns records {"image": Path, "caption", ..., "where": "file: sample"} (the fields
each bench scores) or raises one DataError line naming the file, the sample and the fix; data that
is not on disk at all is `MissingData`, which `eval.py --bench all` skips. Sources and layouts:
docs/benchmarks.md.
"""

import ast
import csv
import json
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torchvision.datasets

from data import read_triplets
from errors import DataError, printable


class MissingData(DataError):
    """A benchmark's data is not on disk: `--bench all` skips it, a single bench stops."""



def require_file(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise MissingData(f"{path}: file does not exist; {fix}")
    return path


def require_images(records, folder_flag: str):
    """Every image on disk, else one line: how many are missing, the first one, which flag to fix."""
    missing = [r for r in records if not r["image"].is_file()]
    if missing:
        raise DataError(f"{missing[0]['where']}: image {printable(missing[0]['image'])} does not exist "
                        f"({len(missing)} of {len(records)} images missing); put the images there or pass "
                        f"{folder_flag}")
    return records


CCNEG_FILE = "ccneg_preprocessed.pt"
CCNEG_IMAGES = "ccneg_images/cc3m_subset_images_extracted_final"
CCNEG_TEST_SIZE = 40_000  # CoN-CLIP: the last 40,000 samples in file order are the test split


def read_ccneg(data_root: Path, image_dir: Path = None, split_size: int = CCNEG_TEST_SIZE, limit=None):
    """CoN-CLIP's ccneg_preprocessed.pt: records of the test split, images found by file name in `image_dir`.
    Commas are removed from negated captions, as CoN-CLIP's evaluation loader does."""
    path = require_file(data_root / CCNEG_FILE, "download it from github.com/jaisidhsingh/CoN-CLIP "
                                                             "(ccneg_dataset/) or pass --data-root")
    try:  # weights_only: the file holds lists, dicts and strings; never unpickle code to read it
        with warnings.catch_warnings():  # torch's notice about a damaged file's pickle protocol
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch raises several kinds for a foreign or broken pickle
        raise DataError(f"{path}: cannot be read with torch.load(weights_only=True) "
                        f"({(str(error).strip() or type(error).__name__).splitlines()[0]}); "
                        "re-download CoN-CLIP's file") from None
    if not isinstance(data, dict) or not {"image_paths", "annotations"} <= data.keys() \
            or len(data["image_paths"]) != len(data["annotations"]):
        raise DataError(f"{path}: expected a dict with equally long 'image_paths' and 'annotations' lists; "
                        "is this CoN-CLIP's ccneg_preprocessed.pt?")
    image_dir = image_dir or data_root / CCNEG_IMAGES
    total = len(data["annotations"])
    records = []
    for index in range(max(0, total - split_size), total)[:limit]:
        where = f"{path}: sample {index}"
        try:
            annotation, image = data["annotations"][index], data["image_paths"][index]
            caption, negation = annotation["json"]["caption"], annotation["sop_data"]["negative-prompt"]
        except (KeyError, TypeError, IndexError):
            raise DataError(f"{where}: no ['json']['caption'] or ['sop_data']['negative-prompt']; "
                            "is this CoN-CLIP's ccneg_preprocessed.pt?") from None
        records.append({"image": image_dir / PurePosixPath(image).name, "caption": caption.strip(),
                        "negation": negation.replace(",", "").strip(), "where": where})
    return require_images(records, "--image-dir")


def read_ccneg_csv(path: Path, image_dir: Path, limit=None):
    """The SemCLIP authors' CSV: their test split is the last 10% of a seed-42 shuffle (pandas
    df.sample(frac=1, random_state=42) == numpy RandomState(42).permutation), 80/10/10."""
    records = read_triplets(require_file(path, "check --ccneg-csv"), required=("negation",),
                            why="cc_neg scores each caption against its negation; is this the authors' CSV?")
    order = np.random.RandomState(42).permutation(len(records))
    test = order[len(records) - int(len(records) * 0.1):]  # train, validation, test = 80%, 10%, the rest
    test = [{**records[i], "image": image_dir / records[i]["image"].name} for i in test[:limit]]
    return require_images(test, "--image-dir")


SCPP_CATEGORIES = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")


def read_sugarcrepe_pp(data_root: Path, image_dir: Path = None, limit=None):
    """{category: records} from the five official JSON files; images are COCO val2017 file names."""
    image_dir = image_dir or data_root / "images"
    categories = {}
    for category in SCPP_CATEGORIES:
        path = require_file(data_root / f"{category}.json", "download the five JSON files from "
                                                         "github.com/Sri-Harsha/scpp or pass --data-root")
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
            categories[category] = [
                {"image": image_dir / item["filename"], "caption": item["caption"].strip(),
                 "paraphrase": item["caption2"].strip(), "negation": item["negative_caption"].strip(),
                 "where": f"{path}: item {number} (id {item.get('id')})"}
                for number, item in enumerate(items[:limit])]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"{path}: not SugarCrepe++'s layout ({type(error).__name__}: {error}); each item "
                            "needs filename, caption, caption2, negative_caption; re-download the file") from None
    require_images([r for records in categories.values() for r in records], "--image-dir")
    return categories


ZEROSHOT_DATASETS = {  # name: (torchvision class, its test split)
    "cifar10": (torchvision.datasets.CIFAR10, {"train": False}),
    "cifar100": (torchvision.datasets.CIFAR100, {"train": False}),
    "flowers102": (torchvision.datasets.Flowers102, {"split": "test"}),
    "food101": (torchvision.datasets.Food101, {"split": "test"}),
    "oxford_iiit_pet": (torchvision.datasets.OxfordIIITPet, {"split": "test"}),
}


def read_zeroshot(name: str, root: Path):
    """A torchvision test split already on disk; eval never downloads."""
    cls, split = ZEROSHOT_DATASETS[name]
    try:
        return cls(str(root), download=False, **split)
    except RuntimeError:
        raise MissingData(f"{root}: {name} test split not found; fetch it once with python -c \"import "
                          f"torchvision; torchvision.datasets.{cls.__name__}('{root}', download=True, "
                          f"{', '.join(f'{k}={v!r}' for k, v in split.items())})\" or pass --data-root") from None


def _read_negbench_csv(path: Path, fix: str) -> list:
    """(line number, row) of each row of a NegBench CSV."""
    try:  # utf-8-sig: a CSV saved by a spreadsheet starts with a byte-order mark
        with open(require_file(path, fix), newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            return [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a UTF-8 CSV file ({error}); re-download the NegBench file") from None


def _negbench_image(image_root: Path, text: str) -> Path:
    """NegBench's image paths are its authors' (absolute: found by file name) or relative to `image_root`."""
    image = Path(text)
    return image_root / (image.name if image.is_absolute() else image)


def read_negbench_mcq(path: Path, image_root: Path, limit=None):
    """NegBench MCQ CSV: four captions per image, `correct_answer` the right one's index."""
    records = []
    for number, row in _read_negbench_csv(path, "check --csv (NegBench: github.com/m1k2zoo/negbench)")[:limit]:
        where = f"{path}:{number}"
        try:
            captions, answer = [row[f"caption_{k}"].strip() for k in range(4)], int(row["correct_answer"])
            if answer not in range(4):
                raise ValueError(answer)
            records.append({"image": _negbench_image(image_root, row["image_path"]), "where": where,
                            "captions": captions, "answer": answer, "caption": captions[answer],
                            "template": row["correct_answer_template"]})
        except (KeyError, ValueError, AttributeError, TypeError):  # a column missing, a row cut short
            raise DataError(f"{where}: needs image_path, caption_0..caption_3, correct_answer 0-3 and "
                            "correct_answer_template; is this a NegBench MCQ file?") from None
    return require_images(records, "--image-root")


NEGBENCH_RETRIEVAL = {"original": "COCO_val_retrieval.csv",  # {results name: NegBench's file name}
                      "negated": "COCO_val_negated_retrieval_llama3.1_rephrased_affneg_true.csv"}


def read_negbench_retrieval(path: Path, image_root: Path, limit=None):
    """NegBench retrieval CSV: a row per image (`filepath`) with its queries in `captions`, the Python list
    literal NegBench's scripts write (str of a list), read with ast.literal_eval (NegBench's eval would run code)."""
    records = []
    for number, row in _read_negbench_csv(path, "download NegBench's CSV files (github.com/m1k2zoo/negbench, "
                                                "benchmarks/README.md) or pass --data-root")[:limit]:
        where = f"{path}:{number}"
        try:
            captions = ast.literal_eval(row["captions"])
            if not isinstance(captions, list) or not all(isinstance(caption, str) for caption in captions):
                raise ValueError(captions)
            records.append({"image": _negbench_image(image_root, row["filepath"]), "where": where,
                            "captions": [caption.strip() for caption in captions]})
        except (KeyError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # what literal_eval raises
            raise DataError(f"{where}: needs filepath and captions, a list of texts such as ['a dog', 'no cat']; "
                            "is this a NegBench retrieval file?") from None
    return require_images(records, "--image-root")


NEGBENCH_CSV = "COCO_val_mcq_llama3.1_rephrased.csv"
