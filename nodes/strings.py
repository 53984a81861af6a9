"""String nodes (category utils/string): substring, length, case, trim, replace, contains, compare
and regular expressions, with ComfyUI's names, inputs and results. Pure Python.

A malformed regular expression gives no match in RegexMatch / RegexExtract (as ComfyUI); RegexReplace
reports it as an error naming the input, since silently returning the text unchanged would hide it."""
from __future__ import annotations

import re

from nodegraph import Boolean, Combo, Int, Node, NodeInputError, Output, String

CASES = ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]
TRIMS = ["Both", "Left", "Right"]
COMPARISONS = ["Starts With", "Ends With", "Equal"]
EXTRACTS = ["First Match", "All Matches", "First Group", "All Groups"]
CATEGORY = "utils/string"


def _text(name: str) -> object:
    """A multi-line text widget with no default (ComfyUI's declaration of these inputs)."""
    return String(name, None, multiline=True)


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return ((re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
            | (re.DOTALL if dotall else 0))


class StringSubstring(Node):
    """string[start:end], Python slicing (negative positions count from the end)."""
    display_name = "Substring"
    category = CATEGORY
    inputs = (_text("string"), Int("start", None), Int("end", None))
    outputs = (Output("STRING"),)

    def run(self, string, start, end):
        return (string[start:end],)


class StringLength(Node):
    display_name = "Length"
    category = CATEGORY
    inputs = (_text("string"),)
    outputs = (Output("INT", "length"),)

    def run(self, string):
        return (len(string),)


class CaseConverter(Node):
    display_name = "Case Converter"
    category = CATEGORY
    inputs = (_text("string"), Combo("mode", CASES))
    outputs = (Output("STRING"),)

    def run(self, string, mode):
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}.get(mode)
        return (convert(string) if convert else string,)


class StringTrim(Node):
    """Removes whitespace from both ends, the left or the right."""
    display_name = "Trim"
    category = CATEGORY
    inputs = (_text("string"), Combo("mode", TRIMS))
    outputs = (Output("STRING"),)

    def run(self, string, mode):
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode)
        return (trim(string) if trim else string,)


class StringReplace(Node):
    """Replaces every occurrence of `find` (plain text)."""
    display_name = "Replace"
    category = CATEGORY
    inputs = (_text("string"), _text("find"), _text("replace"))
    outputs = (Output("STRING"),)

    def run(self, string, find, replace):
        return (string.replace(find, replace),)


class StringContains(Node):
    display_name = "Contains"
    category = CATEGORY
    inputs = (_text("string"), _text("substring"), Boolean("case_sensitive", True))
    outputs = (Output("BOOLEAN", "contains"),)

    def run(self, string, substring, case_sensitive):
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(Node):
    """Whether string_a starts with, ends with or equals string_b."""
    display_name = "Compare"
    category = CATEGORY
    inputs = (_text("string_a"), _text("string_b"), Combo("mode", COMPARISONS), Boolean("case_sensitive", True))
    outputs = (Output("BOOLEAN"),)

    def run(self, string_a, string_b, mode, case_sensitive):
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        if mode == "Starts With":
            return (string_a.startswith(string_b),)
        if mode == "Ends With":
            return (string_a.endswith(string_b),)
        return (string_a == string_b,)


class RegexMatch(Node):
    """Whether the pattern matches anywhere in the string."""
    display_name = "Regex Match"
    category = CATEGORY
    inputs = (_text("string"), _text("regex_pattern"), Boolean("case_insensitive", True),
              Boolean("multiline", False), Boolean("dotall", False))
    outputs = (Output("BOOLEAN", "matches"),)

    def run(self, string, regex_pattern, case_insensitive, multiline, dotall):
        try:
            return (re.search(regex_pattern, string, regex_flags(case_insensitive, multiline, dotall)) is not None,)
        except re.error:
            return (False,)


def extract(string: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    """RegexExtract's result; several results are joined with newlines."""
    if mode == "First Match":
        match = re.search(pattern, string, flags)
        return match.group(0) if match else ""
    if mode == "All Matches":
        found = re.findall(pattern, string, flags)
        # with groups, findall gives tuples (several groups) or the group (one); ComfyUI keeps the first
        return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
    if mode == "First Group":
        match = re.search(pattern, string, flags)
        return (match.group(group_index) or "") if match and len(match.groups()) >= group_index else ""
    if mode == "All Groups":
        return "\n".join(m.group(group_index) or "" for m in re.finditer(pattern, string, flags)
                         if m.groups() and len(m.groups()) >= group_index)
    return ""


class RegexExtract(Node):
    """The first match, every match, or a numbered group of the first / every match."""
    display_name = "Regex Extract"
    category = CATEGORY
    inputs = (_text("string"), _text("regex_pattern"), Combo("mode", EXTRACTS), Boolean("case_insensitive", True),
              Boolean("multiline", False), Boolean("dotall", False), Int("group_index", 1, min=0, max=100))
    outputs = (Output("STRING"),)

    def run(self, string, regex_pattern, mode, case_insensitive, multiline, dotall, group_index):
        try:
            return (extract(string, regex_pattern, mode, regex_flags(case_insensitive, multiline, dotall), group_index),)
        except re.error:
            return ("",)


class RegexReplace(Node):
    """Find and replace text using regex patterns."""
    display_name = "Regex Replace"
    category = CATEGORY
    inputs = (_text("string"), _text("regex_pattern"), _text("replace"),
              Boolean("case_insensitive", True, optional=True), Boolean("multiline", False, optional=True),
              Boolean("dotall", False, optional=True,
                      tooltip="When enabled, the dot (.) character will match any character including newline "
                              "characters. When disabled, dots won't match newlines."),
              Int("count", 0, min=0, max=100, optional=True,
                  tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences (default). "
                          "Set to 1 to replace only the first match, 2 for the first two matches, etc."))
    outputs = (Output("STRING"),)

    def run(self, string, regex_pattern, replace, case_insensitive=True, multiline=False, dotall=False, count=0):
        try:
            compiled = re.compile(regex_pattern, regex_flags(case_insensitive, multiline, dotall))
        except re.error as exc:
            raise NodeInputError("regex_pattern", f"invalid regular expression: {exc}") from exc
        try:
            return (compiled.sub(replace, string, count=count),)
        except (re.error, IndexError) as exc:
            raise NodeInputError("replace", f"invalid replacement (group references like \\1 need a group "
                                            f"in the pattern): {exc}") from exc


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (StringSubstring, StringLength, CaseConverter, StringTrim,
                                                      StringReplace, StringContains, StringCompare, RegexMatch,
                                                      RegexExtract, RegexReplace)}
