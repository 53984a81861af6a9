"""Emphasis syntax, as ComfyUI reads it."""
import pytest

from nodes.sd.clip.prompt_weights import parse_prompt_weights


@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("", []),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("(((cat)))", [("cat", 1.1 * 1.1 * 1.1)]),
    ("a (cat:1.5) b", [("a ", 1.0), ("cat", 1.5), (" b", 1.0)]),
    ("(cat:0.5)", [("cat", 0.5)]),
    ("((cat:1.5))", [("cat", 1.5)]),  # an explicit weight replaces, whatever the depth
    ("((cat):1.5)", [("cat", 1.5 * 1.1)]),  # the inner group multiplies the explicit weight
    ("(a (b) c:2)", [("a ", 2.0), ("b", 2.0 * 1.1), (" c", 2.0)]),
    ("(time: 12:30)", [("time: 12", 30.0)]),  # the last colon counts
    ("(ratio:abc)", [("ratio:abc", 1.1)]),  # not a number: emphasis only, text kept
    ("(:1.5)", [(":1.5", 1.1)]),  # a colon at the start is text
    ("[cat]", [("[cat]", 1.0)]),  # square brackets mean nothing
    ("\\(cat\\)", [("(cat)", 1.0)]),  # escaped parentheses are literal
    ("(\\(cat\\):1.2)", [("(cat)", 1.2)]),
    ("\\((cat)\\)", [("(", 1.0), ("cat", 1.1), (")", 1.0)]),
    ("a (cat", [("a ", 1.0), ("(cat", 1.0)]),  # unclosed: text
    ("()", []),
    ("a) (b)", [("a) (b)", 1.0)]),  # after a stray ")" parentheses are text (ComfyUI's depth counting)
])
def test_emphasis(prompt, expected):
    assert parse_prompt_weights(prompt) == expected


def test_weights_are_bit_identical_to_comfyui_products():
    [(_, w)] = parse_prompt_weights("((cat))")
    assert w == 1.2100000000000002  # 1.0 * 1.1 * 1.1, not a rounded 1.21


def test_starting_weight():
    assert parse_prompt_weights("a (b)", weight=2.0) == [("a ", 2.0), ("b", 2.0 * 1.1)]
