"""Our CLIP BPE tokenizer and text transformer against transformers' CLIPTokenizer / CLIPTextModel (the
classes they replace to keep transformers out of a cold run): same ids, same hidden states."""
from __future__ import annotations

import html

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import CLIPTextConfig as HFConfig
from transformers import CLIPTextModel as HFModel
from transformers import CLIPTokenizer

from nodes.sd.clip.bpe import CLIPBPE
from nodes.sd.clip.text_model import CLIPTextConfig, CLIPTextModel
from nodes.sd.clip.tokenizer import _PLAIN_TEXT, DATA_DIR, clip_clean

PROMPTS = [
    "", " ", "a photograph of an astronaut riding a horse",
    "Masterpiece, BEST quality, (ultra-detailed:1.2), 8k, HDR!!!",
    "it's a dog's life; they're here, we've gone, I'm sure, you'll see, he'd go",
    "café déjà vu — naïve coöperation, ½ price, ÆØÅ, straße, İstanbul",
    "emoji 🐱‍👤 and CJK 東京タワー and Ελληνικά and русский текст",
    "&amp;amp; &lt;b&gt; html \"quotes\" ‘curly’ “double”", "tabs\tand\nnewlines   and    spaces",
    "numbers 1234567890 3.14 1,000,000 2nd 21st", "a<|endoftext|>b <|startoftext|> c", "<|ENDOFTEXT|> shouting",
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "x" * 300, "!!!???...,,,;;;",
]


@pytest.fixture(scope="module")
def pair():
    ours = CLIPBPE(str(DATA_DIR / "vocab.json"), str(DATA_DIR / "merges.txt"), clean=clip_clean)
    theirs = CLIPTokenizer(str(DATA_DIR / "vocab.json"), str(DATA_DIR / "merges.txt"))
    theirs.fix_text = clip_clean  # as the SD1 tokenizer configured it before
    return ours, theirs


@pytest.mark.parametrize("text", PROMPTS)
def test_same_ids_as_transformers(pair, text):
    ours, theirs = pair
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]


def test_same_vocabulary(pair):
    ours, theirs = pair
    assert ours.get_vocab() == theirs.get_vocab()


def test_text_model_equals_transformers_with_every_hidden_state():
    config = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu")
    torch.manual_seed(0)
    reference = HFModel(HFConfig(**config)).eval()
    ours = CLIPTextModel(CLIPTextConfig(**config)).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert missing == [] and set(unexpected) <= {"text_model.embeddings.position_ids"}
    ids = torch.randint(0, 1000, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids, output_hidden_states=True)
        got = ours(input_ids=ids, output_hidden_states=True)
    assert len(got.hidden_states) == len(expected.hidden_states) == 4
    for a, b in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-5, atol=1e-5)


PLAIN = "\t\n" + "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=PLAIN, max_size=80))
def test_the_plain_text_shortcut_is_what_ftfy_returns(text):
    """clip_clean skips ftfy (and its import) for plain ASCII without entities: ftfy returns that unchanged."""
    import ftfy
    assert _PLAIN_TEXT.fullmatch(text)
    assert ftfy.fix_text(text) == text


@pytest.mark.parametrize("text", ["&amp;amp;amp;", "caf\u00e9", "a\r\nb", "x\x1b[31my", "\u201ccurly\u201d"])
def test_anything_else_goes_through_ftfy(text):
    import ftfy
    assert not _PLAIN_TEXT.fullmatch(text)
    assert clip_clean(text) == html.unescape(html.unescape(ftfy.fix_text(text))).strip()
