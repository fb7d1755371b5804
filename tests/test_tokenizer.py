"""tokenizer.py: cl100k_base equals tiktoken's own, CLIP's BPE equals open_clip's, rows keep end-of-text."""

import hashlib
import json
import sys

import pytest
import tiktoken
import torch

from tokenizer import clip_words, get_tokenizer, tokenize, trim_padding

from conftest import ROOT, SUGARCREPE_PP

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def tiktoken_reference(tmp_path_factory):
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


def sugarcrepe_pp_captions():
    """Every caption of the five SugarCrepe++ files shipped in tests/data (14,271 texts)."""
    texts = []
    for path in sorted(SUGARCREPE_PP.glob("*.json")):
        for item in json.loads(path.read_text()):
            texts += [item["caption"], item["caption2"], item["negative_caption"]]
    return texts


AWKWARD_CL100K = ["<|endoftext|> is just text", "Ünïcödé café — naïve", "emoji 🐶🐱",
                  "日本語のキャプション", "  spaces  and\nnewlines\t", "x" * 3000, "a " * 500, ""]


def test_tokenizer_equals_tiktoken_cl100k_base(tiktoken_reference):
    texts = AWKWARD_CL100K + sugarcrepe_pp_captions()
    assert len(texts) > 14_000
    assert get_tokenizer().encode_ordinary_batch(texts) == tiktoken_reference.encode_ordinary_batch(texts)


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


def test_trim_padding_keeps_every_column_up_to_the_last_end_of_text():
    tokens = tokenize(["a red circle and a blue square", "hi"], 16)
    trimmed = trim_padding(tokens)
    assert trimmed.shape == (2, 8) and (trimmed == 100257).sum() == 2
    assert torch.equal(trimmed, tokens[:, :8]) and not tokens[:, 8:].any()


# ----------------------------------------------------------------------------- CLIP's BPE

AWKWARD_CLIP = [
    "Café crème brûlée", "Cafe\u0301 de\u0301ja\u0300 vu", "naïve Zoë résumé",
    "İstanbul ß ẞ Σίσυφος",
    "a dog 🐶 and a cat 🐱‍👤 with a family 👨‍👩‍👧", "emoji🙂text",
    "一只猫坐在桌子上，旁边有一只狗！",
    "東京タワー、ｈｅｌｌｏ　ｗｏｒｌｄ１２３", "ﾊﾝｶｸ ｶﾀｶﾅ",
    "한국어 텍스트", "עברית عربي", "the dog’s “ball” isn't here",
    "ﬁsh ﬂakes", "&amp;amp; &lt;b&gt; tom &amp; jerry", "a\x00b\tc\nd\r\n e\u2028f\u00a0g\u200bh\u200di",
    "<start_of_text> hi <END_OF_TEXT> there", "x's 'S ''s it'LL we'd", "½ ² ③ Ⅻ 42 3.14", "a_b-c--d...e!!!?",
    "", "   ", "word " * 300, " ".join(f"caption{i} with number {i}" for i in range(300)),
]


def test_clip_tokenizer_equals_open_clip_on_every_sugarcrepe_pp_caption(open_clip):
    captions = sugarcrepe_pp_captions()
    assert len(captions) > 14_000
    assert torch.equal(tokenize(captions, 77, "clip"), open_clip.tokenize(captions))


@pytest.mark.parametrize("context_length", [77, 16])
def test_clip_tokenizer_equals_open_clip_on_awkward_text(open_clip, context_length):
    ours = tokenize(AWKWARD_CLIP, context_length, "clip")
    assert torch.equal(ours, open_clip.tokenize(AWKWARD_CLIP, context_length))
    assert (ours[:, 0] == 49406).all() and (ours == 49407).any(-1).all()  # <start_of_text>, then EOT kept


def test_word_split_equals_the_regex_on_every_code_point(open_clip):
    regex = pytest.importorskip("regex")
    # U+1C..U+1F are whitespace to str.split but not to the pattern; cleaning removes them first.
    text = " ".join(chr(c) for c in range(sys.maxunicode + 1)
                    if not (0xD800 <= c < 0xE000 or 0x1C <= c <= 0x1F))
    assert clip_words(text) == regex.findall(open_clip.tokenizer._tokenizer.pat, text)


def test_tokenize_no_texts_is_an_empty_batch():
    assert tokenize([], 8).shape == (0, 8)
