"""Prompt emphasis syntax, read the way ComfyUI reads it, so the same prompt gives the same weights.

`(text)` multiplies the weight by 1.1 per level, `(text:1.5)` sets it, `\\(` and `\\)` are literal
parentheses, and square brackets have no meaning (they are plain text, not ÷1.1 as in A1111).
"""
from __future__ import annotations

EMPHASIS = 1.1

# Stand-ins for the escaped parentheses while the parser runs; control characters never typed in a prompt.
_OPEN_LITERAL = "\0\2"
_CLOSE_LITERAL = "\0\1"


def parse_prompt_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """Split a prompt into `(text, weight)` segments, in order.

    >>> parse_prompt_weights("a (red:1.5) ((cat))")
    [('a ', 1.0), ('red', 1.5), (' ', 1.0), ('cat', 1.2100000000000002)]

    Weights multiply in the order ComfyUI multiplies them, so they are equal as floats, not just close.
    Unbalanced parentheses are kept as text, with ComfyUI's depth counting (after a stray `)` the rest of
    the prompt is plain text).
    """
    protected = text.replace("\\)", _CLOSE_LITERAL).replace("\\(", _OPEN_LITERAL)
    return [(_restore_literals(segment), w) for segment, w in _weighted_segments(protected, weight)]


def _weighted_segments(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _split_top_level_groups(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            inner_weight = weight * EMPHASIS
            colon = inner.rfind(":")
            if colon > 0:  # `(text:w)`; a leading ":" (colon == 0) is text
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass  # `(a:b)` with no number after the colon: emphasis only, colon kept
            out += _weighted_segments(inner, inner_weight)
        else:
            out.append((part, weight))
    return out


def _split_top_level_groups(text: str) -> list[str]:
    """Plain runs and top-level `( … )` groups (parentheses included), in order; empty runs dropped."""
    parts: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    parts.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + char)
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _restore_literals(text: str) -> str:
    return text.replace(_CLOSE_LITERAL, ")").replace(_OPEN_LITERAL, "(")
