"""Train/test overlap: a fingerprint of the training data, kept in the checkpoint, and the count of a
benchmark's test items it covers.

A model scored on images it trained on looks better than it is, and nothing in the numbers says so:
the SemCLIP authors' SugarCrepe++ CSV is SugarCrepe++ itself, and a random 80% of their CC-Neg CSV
shares images with CoN-CLIP's test split (its last 40,000 samples). An image is identified by its
file name (the path's last component: COCO's 000000222235.jpg, CC-Neg's 9-digit names), which
survives copying the data set to another folder. Shared captions alone are common and legitimate
(the synthetic world repeats most of its captions), so they are counted but not warned about.

The fingerprint stores 64-bit hashes, sorted: 8 bytes per training image and per distinct caption.
"""

import hashlib
from pathlib import PurePath

import torch


def _hash(text: str) -> int:
    """A 64-bit BLAKE2b hash as a signed integer (an int64 tensor element)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def normalise_caption(text: str) -> str:
    """Lower case, single spaces, no trailing full stop: "A dog. " and "a  dog" are one caption."""
    return " ".join(text.lower().split()).rstrip(".").rstrip()


def fingerprint(records) -> dict:
    """{"image_names", "captions"}: hashes of the training records' image file names and captions."""
    image_names = {_hash(PurePath(r["image"]).name) for r in records}
    captions = {_hash(normalise_caption(r["caption"])) for r in records}
    return {"image_names": torch.tensor(sorted(image_names), dtype=torch.int64),
            "captions": torch.tensor(sorted(captions), dtype=torch.int64)}


def count_overlap(train_fingerprint, records):
    """(test items whose image file name the training data had, test items whose caption it had);
    (None, None) without a fingerprint (published weights) or without file names (torchvision sets)."""
    if train_fingerprint is None or records is None:
        return None, None
    image_names = torch.tensor([_hash(PurePath(r["image"]).name) for r in records], dtype=torch.int64)
    captions = torch.tensor([_hash(normalise_caption(r["caption"])) for r in records], dtype=torch.int64)
    return (int(torch.isin(image_names, train_fingerprint["image_names"]).sum()),
            int(torch.isin(captions, train_fingerprint["captions"]).sum()))

