"""Text to token ids, offline: tiktoken's cl100k_base (our models) and CLIP's BPE (published weights).

    tokenize(["a red circle"], context_length=32)                  # cl100k_base, our default
    tokenize(["a red circle"], context_length=77, tokenizer="clip")  # OpenAI / open_clip weights

Both vocabularies are read from assets/ and checked against a pinned SHA-256: nothing is
downloaded at run time. A row is the text, cut so that the end-of-text token always fits, then
end-of-text, then zero padding; the text encoder pools at end-of-text (ModelConfig.eot_token).
"""

import base64
import functools
import gzip
import hashlib
import html
import math
import unicodedata
from pathlib import Path

import tiktoken
import torch

from errors import DataError

ASSETS = Path(__file__).resolve().parent / "assets"

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
    # one text at a time: tiktoken's encode_ordinary_batch starts a pool of threads on every call, which
    # costs a batch of short captions more than encoding them
    rows = [(start + encoding.encode_ordinary(text))[: context_length - 1] + [encoding.eot_token] for text in texts]
    padded = [row + [0] * (context_length - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.long).view(len(rows), context_length)


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


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Cut the columns that are padding in every row (padding is 0 and comes after end-of-text,
    which is never 0): exact for a causal encoder that pools at end-of-text, and cheaper."""
    used = (tokens != 0).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1 if len(used) else 1]
