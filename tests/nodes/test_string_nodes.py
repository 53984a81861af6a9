"""String nodes: each result written out by hand from the node's documented rule."""
import pytest

from nodegraph import NodeInputError
from nodes.strings import (CaseConverter, RegexExtract, RegexMatch, RegexReplace, StringCompare, StringContains,
                           StringLength, StringReplace, StringSubstring, StringTrim)

TEXT = "Red circle, blue square\nGreen star"


def test_substring_length_case_trim_replace():
    assert StringSubstring().run(TEXT, 4, 10) == ("circle",)
    assert StringSubstring().run(TEXT, -4, 100) == ("star",)
    assert StringLength().run("héllo") == (5,)
    assert CaseConverter().run("a bLUE star", "UPPERCASE") == ("A BLUE STAR",)
    assert CaseConverter().run("a bLUE star", "lowercase") == ("a blue star",)
    assert CaseConverter().run("a bLUE star", "Capitalize") == ("A blue star",)
    assert CaseConverter().run("a bLUE star", "Title Case") == ("A Blue Star",)
    assert StringTrim().run("  x \n", "Both") == ("x",)
    assert StringTrim().run("  x \n", "Left") == ("x \n",)
    assert StringTrim().run("  x \n", "Right") == ("  x",)
    assert StringReplace().run("a.b.c", ".", "-") == ("a-b-c",)


def test_contains_and_compare():
    assert StringContains().run(TEXT, "BLUE", True) == (False,)
    assert StringContains().run(TEXT, "BLUE", False) == (True,)
    assert StringCompare().run("Prefix-rest", "prefix", "Starts With", True) == (False,)
    assert StringCompare().run("Prefix-rest", "prefix", "Starts With", False) == (True,)
    assert StringCompare().run("a.png", ".PNG", "Ends With", False) == (True,)
    assert StringCompare().run("abc", "abc", "Equal", True) == (True,)


def test_regex_match_flags():
    assert RegexMatch().run(TEXT, r"^green", True, False, False) == (False,)  # ^ only at the start
    assert RegexMatch().run(TEXT, r"^green", True, True, False) == (True,)   # multiline
    assert RegexMatch().run(TEXT, r"^green", False, True, False) == (False,)  # case-sensitive
    assert RegexMatch().run(TEXT, r"square.Green", True, False, True) == (True,)  # dotall
    assert RegexMatch().run(TEXT, r"(unclosed", True, False, False) == (False,)


@pytest.mark.parametrize("pattern, mode, group, expected", [
    (r"circle|square", "First Match", 1, "circle"),
    (r"circle|square", "All Matches", 1, "circle\nsquare"),
    (r"(\w+) (circle|square)", "All Matches", 1, "Red\nblue"),  # with groups: each match's first group
    (r"(\w+) (circle|square)", "First Group", 1, "Red"),
    (r"(\w+) (circle|square)", "All Groups", 1, "Red\nblue"),
    (r"(\w+) (circle|square)", "All Groups", 2, "circle\nsquare"),
    (r"(\w+) (circle|square)", "First Group", 3, ""),  # there is no third group
])
def test_regex_extract(pattern, mode, group, expected):
    assert RegexExtract().run(TEXT, pattern, mode, True, False, False, group) == (expected,)


def test_regex_extract_bad_pattern_gives_empty_text():
    assert RegexExtract().run(TEXT, "[", "First Match", True, False, False, 1) == ("",)


def test_regex_replace():
    assert RegexReplace().run(TEXT, r"(\w+) (circle|square)", r"\2 \1") == ("circle Red, square blue\nGreen star",)
    assert RegexReplace().run("aAaA", "a", "-", case_insensitive=True, count=3) == ("---A",)
    assert RegexReplace().run("aAaA", "a", "-", case_insensitive=False) == ("-A-A",)
    with pytest.raises(NodeInputError, match="regex_pattern"):
        RegexReplace().run("x", "(", "y")
    with pytest.raises(NodeInputError, match="replace"):
        RegexReplace().run("x", "x", r"\3")
