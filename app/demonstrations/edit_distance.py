"""Levenshtein distance in characters, for how far a demonstration moved from its model draft.

Bit-parallel (Myers 1999, in Hyyrö's formulation for edit distance): one pass over `a` with the
columns of the classic table packed into one Python integer, so each character costs a handful of
big-integer operations instead of a loop over `b`. Two 20,000-character texts take milliseconds
where the textbook table would take minutes of Python; it runs inside the submit request.
"""

from __future__ import annotations


def levenshtein(a: str, b: str) -> int:
    """Insertions, deletions and substitutions (each 1) turning `a` into `b`."""
    # Shared ends cost nothing and are common (a draft edited in one place).
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end = 0
    while end < len(a) - start and end < len(b) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start : len(a) - end], b[start : len(b) - end]
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    match: dict[str, int] = {}  # character -> the positions of b holding it, as bits
    for i, char in enumerate(b):
        match[char] = match.get(char, 0) | (1 << i)
    mask = (1 << m) - 1
    top = 1 << (m - 1)
    plus, minus = mask, 0  # vertical deltas +1 / -1 of the current column
    score = m
    for char in a:
        eq = match.get(char, 0)
        xv = eq | minus
        xh = ((((eq & plus) + plus) & mask) ^ plus) | eq
        h_plus = minus | (~(xh | plus) & mask)
        h_minus = plus & xh
        if h_plus & top:
            score += 1
        elif h_minus & top:
            score -= 1
        h_plus = ((h_plus << 1) | 1) & mask
        h_minus = (h_minus << 1) & mask
        plus = h_minus | (~(xv | h_plus) & mask)
        minus = h_plus & xv
    return score
