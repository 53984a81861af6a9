"""Token ids of SD1Tokenizer against hand-derived values and an independent re-implementation of OpenAI's
tokenizer (tests/sd/clip/openai_bpe.py), plus ComfyUI 0.3.64's per-segment packing into 77-token chunks."""
import hashlib
import json

import pytest

from nodes.sd.clip.tokenizer import DATA_DIR, SD1Tokenizer

from .openai_bpe import ReferenceTokenizer

START, END = 49406, 49407

AWKWARD_PROMPTS = [
    "a photo of a cat",
    'a "quoted" word',
    "“curly” ‘single’ quotes",
    "Tom &amp; Jerry",
    "&amp;amp; and a < b",  # bare ftfy.fix_text keeps &amp;amp; here; CLIP unescapes twice
    "&lt;b&gt;bold&lt;/b&gt;",
    "it&#39;s",
    "🐱 cat 👩‍👩‍👧 🏳️‍🌈",
    "猫の写真 中文提示 한국어",
    "ＦＵＬＬ　ｗｉｄｔｈ ＡＢＣ",
    "cafÃ© naÃ¯ve",  # mojibake
    "a (red:1.5) [blue] ((cat)) \\(x\\)",
    "Mixed CASE Words, with punctuation!!! 3.14159",
    "don't you'll we've",
    "line1\nline2\t tab   spaces",
    "Ñandú über Straße",
    "masterpiece, best quality, 1girl, detailed eyes",
]


@pytest.fixture(scope="module")
def tokenizer():
    return SD1Tokenizer()


@pytest.fixture(scope="module")
def reference():
    return ReferenceTokenizer()


def ids(chunk):
    return [t for t, _ in chunk]


def padded(tokens):
    return tokens + [END] * (77 - len(tokens))


def test_shipped_vocabulary_files_match_the_published_sha256():
    digests = {name: hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() for name in ("vocab.json", "merges.txt")}
    assert digests == {
        "vocab.json": "3f0c4f7d2086b61b38487075278ea9ed04edb53a03cbb045b86c27190fa8fb69",
        "merges.txt": "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a",
    }


def test_reference_rebuilds_the_same_vocabulary(reference):
    assert json.loads((DATA_DIR / "vocab.json").read_text(encoding="utf-8")) == reference.encoder


def test_known_ids(tokenizer):
    assert tokenizer.tokenize_text("a photo of a cat") == [START, 320, 1125, 539, 320, 2368, END]
    assert tokenizer.tokenize_text("") == [START, END]
    [chunk] = tokenizer.tokenize_with_weights("a photo of a cat")
    assert chunk == [(t, 1.0) for t in padded([START, 320, 1125, 539, 320, 2368, END])]
    assert tokenizer.tokenize_with_weights("") == [[(t, 1.0) for t in padded([START, END])]]


@pytest.mark.parametrize("prompt", AWKWARD_PROMPTS)
def test_whole_text_ids_equal_openai_clip(tokenizer, reference, prompt):
    assert tokenizer.tokenize_text(prompt) == reference.encode(prompt)


@pytest.mark.parametrize("prompt", [p for p in AWKWARD_PROMPTS if "(" not in p])
def test_a_segment_without_weights_is_tokenized_whole_by_clip(tokenizer, reference, prompt):
    # ComfyUI 0.3.64 (comfy/sd1_clip.py): a weighted segment is cut only before " embedding:", and each
    # piece goes through CLIP's tokenizer as a whole (clean-up, lower case, BPE) - no word-by-word lookup.
    [chunk] = tokenizer.tokenize_with_weights(prompt)
    assert ids(chunk) == padded(reference.encode(prompt))


def test_capital_letters_are_lower_cased_as_clip_does(tokenizer):
    assert tokenizer.tokenize_text("A") == [START, 320, END]
    assert ids(tokenizer.tokenize_with_weights("A cat")[0])[:4] == [START, 320, 2368, END]


def test_weights_attach_to_their_segments(tokenizer, reference):
    [chunk] = tokenizer.tokenize_with_weights("(cat) [dog] (bird:1.5) ((fish)) \\(x\\)")
    dog = reference.encode(" [dog] ")[1:-1]
    paren_x = reference.encode(" (x)")[1:-1]
    expected = ([(START, 1.0), (2368, 1.1 * 1.0)] + [(t, 1.0) for t in dog]
                + [(reference.encoder["bird</w>"], 1.5), (reference.encoder["fish</w>"], 1.0 * 1.1 * 1.1)]
                + [(t, 1.0) for t in paren_x] + [(END, 1.0)])
    assert chunk[: len(expected)] == expected
    assert chunk[len(expected):] == [(END, 1.0)] * (77 - len(expected))


def test_150_tokens_make_two_full_chunks_and_151_three(tokenizer):
    two = tokenizer.tokenize_with_weights("cat " * 150)
    assert [ids(c) for c in two] == [[START] + [2368] * 75 + [END]] * 2
    three = tokenizer.tokenize_with_weights("cat " * 151)
    assert len(three) == 3 and ids(three[2]) == padded([START, 2368, END])


def test_a_long_segment_is_split_at_the_chunk_boundary_even_inside_a_word(tokenizer, reference):
    # The whole prompt is one segment of 8+ tokens, so it fills the first chunk to 75 tokens exactly,
    # wherever that falls (this is what the 85-token conformance case pins).
    word = "zebracorns"
    pieces = reference.encode(word)[1:-1]
    assert 2 <= len(pieces) < 8
    chunks = tokenizer.tokenize_with_weights("cat " * 74 + word)
    assert ids(chunks[0]) == [START] + [2368] * 74 + pieces[:1] + [END]
    assert ids(chunks[1]) == padded([START, *pieces[1:], END])


def test_a_short_segment_that_does_not_fit_moves_whole_to_the_next_chunk(tokenizer, reference):
    word = "zebracorns"
    pieces = reference.encode(word)[1:-1]
    chunks = tokenizer.tokenize_with_weights("cat " * 74 + f"({word}:1.2)")
    assert ids(chunks[0]) == [START] + [2368] * 74 + [END, END]  # closed early, padded
    assert chunks[1][: len(pieces) + 2] == [(START, 1.0), *[(t, 1.2) for t in pieces], (END, 1.0)]


def test_a_weighted_segment_of_eight_or_more_tokens_is_split_at_the_boundary(tokenizer, reference):
    word = "xqzvbnmlkjhgfdsapoiu"
    pieces = reference.encode(word)[1:-1]
    assert len(pieces) >= 8
    chunks = tokenizer.tokenize_with_weights("cat " * 70 + f"({word}:1.2)")
    assert ids(chunks[0]) == [START] + [2368] * 70 + pieces[:5] + [END]
    assert ids(chunks[1]) == padded([START, *pieces[5:], END])


def test_every_chunk_is_77_pairs(tokenizer):
    for prompt in ["", "a", "cat " * 300, "(long:1.3) " * 60]:
        chunks = tokenizer.tokenize_with_weights(prompt)
        assert chunks and all(len(c) == 77 and c[0] == (START, 1.0) and END in ids(c) for c in chunks)


def test_disable_weights_reads_parentheses_as_text(tokenizer, reference):
    [chunk] = tokenizer.tokenize_with_weights("(cat:1.5)", disable_weights=True)
    assert ids(chunk) == padded(reference.encode("(cat:1.5)"))
    assert {w for _, w in chunk} == {1.0}
