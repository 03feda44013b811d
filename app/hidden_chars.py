"""Hidden and bidirectional characters in untrusted text, shown as visible markers.

A labeler judges what the page shows. Two kinds of characters make the page show something else
than the text: bidirectional controls (a U+202E RIGHT-TO-LEFT OVERRIDE makes "abc" read "cba"),
and characters that draw nothing (zero-width spaces, joiners, tag characters that can spell a
whole hidden instruction, runs of variation selectors that can carry hidden bytes). Code hosts
warn about the first kind (GitLab flags Unicode's Bidi_Control set, GitHub "hidden or
bidirectional Unicode text"); here both are replaced, at display only, by a marker: a small
bordered span naming the code points (`U+202E`) with their names as its title. The character
itself is never emitted, so a bidi control cannot reorder anything, with or without our CSS; the
stored text, exports and training data keep it unchanged.

Which characters: Unicode's Default_Ignorable_Code_Point set (which holds the Bidi_Control set)
plus the interlinear annotation controls. A few uses of them are how some scripts and emoji are
written, so they are left alone when they have a visible effect: a zero-width (non-)joiner after
a letter of a joining script (Persian "می‌خواهم", Devanagari conjuncts), a joiner between emoji
(👩‍💻), one variation selector after a character that has variants (❤️, CJK ideographic
variants), the tag sequence of a subdivision flag (🏴 England). Anything else, and any run of
two or more, is marked: a run becomes one marker.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from markupsafe import Markup, escape

MAX_MARKERS = 100
"""Markers one text shows; further runs are shown as OVERFLOW. A marker is ~150 bytes of HTML, so
without a limit a 100,000-character text alternating letters and zero-width spaces would render
to 4.5 MB (and be stored so, and cached)."""
OVERFLOW = "\ufffd"
"""What a run past MAX_MARKERS becomes: the replacement character, plain text."""

NOTICE = Markup(
    '<p class="hidden-chars-notice" role="note">'
    "This text contains hidden or bidirectional Unicode characters, shown as markers.</p>\n"
)
"""Put above a text block (prompt, completion, demonstration) that contains a marker."""
NOTICE_OVERFLOW = Markup(
    '<p class="hidden-chars-notice" role="note">'
    "This text contains hidden or bidirectional Unicode characters, shown as markers "
    f"(past the first {MAX_MARKERS}, as {OVERFLOW}).</p>\n"
)

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Unicode's Bidi_Control property: the characters that reorder the text around them."""

_RANGES = [
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # zero width space, non-joiner, joiner; LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFFB),  # unassigned specials, interlinear annotation controls
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE0FFF),  # tag characters, variation selectors supplement
]
_CANDIDATES = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _RANGES) + "]+")

# Scripts whose letters join or form conjuncts, where ZWJ/ZWNJ change what is drawn.
_JOINING_SCRIPTS = [
    (0x0600, 0x08FF),  # Arabic, Syriac, Thaana, N'Ko and their extensions
    (0x0900, 0x0DFF),  # Devanagari to Sinhala
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x18AF),  # Khmer, Mongolian
    (0xA8E0, 0xA8FF),  # Devanagari extended
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xFB50, 0xFDFF),  # Arabic presentation forms A
    (0xFE70, 0xFEFC),  # Arabic presentation forms B (not U+FEFF)
]
_PICTOGRAPHIC = [(0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF)]
_EMOJI_VARIANT_BASES = [(0x23, 0x23), (0x2A, 0x2A), (0x30, 0x39), (0xA9, 0xA9), (0xAE, 0xAE), (0x2000, 0x33FF)]
_EMOJI_VARIANT_BASES += _PICTOGRAPHIC
_CJK = [(0x3400, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)]
_STANDARDIZED_VARIANT_BASES = [(0x1000, 0x109F), (0x2000, 0x2BFF), (0x3000, 0x9FFF), (0xA840, 0xA877)]
_STANDARDIZED_VARIANT_BASES += [(0xF900, 0xFAFF), (0x10AC0, 0x10AFF), (0x20000, 0x3FFFF)]
_BLACK_FLAG, _CANCEL_TAG = "\U0001f3f4", "\U000e007f"


def _within(char: str, ranges: list[tuple[int, int]]) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def _has_visible_effect(text: str, start: int, end: int) -> bool:
    """Whether the run text[start:end] is one of the few ordinary uses listed in the module's
    docstring (so it is left in the text)."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if not before or before.isspace():
        return False
    run = text[start:end]
    emoji_join = bool(after) and _within(before, _PICTOGRAPHIC) and _within(after, _PICTOGRAPHIC)
    if run in ("\u200d", "\ufe0f\u200d") and emoji_join:
        return True
    if run in ("\u200c", "\u200d", "\u180e"):
        return unicodedata.category(before)[0] in "LM" and _within(before, _JOINING_SCRIPTS)
    if len(run) == 1:
        code = ord(run)
        if code in (0xFE0E, 0xFE0F):
            return _within(before, _EMOJI_VARIANT_BASES)
        if 0xFE00 <= code <= 0xFE0D:
            return _within(before, _STANDARDIZED_VARIANT_BASES)
        if 0xE0100 <= code <= 0xE01EF:
            return _within(before, _CJK)
        if code in (0x180B, 0x180C, 0x180D, 0x180F):
            return 0x1820 <= ord(before) <= 0x18AF
        return False
    # A subdivision flag: black flag, up to 7 tag letters/digits, cancel tag.
    return (
        before == _BLACK_FLAG
        and run[-1] == _CANCEL_TAG
        and len(run) <= 8
        and all(0xE0020 <= ord(ch) <= 0xE007E for ch in run[:-1])
    )


def hidden_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of characters to show as a marker, in order."""
    return [
        (match.start(), match.end())
        for match in _CANDIDATES.finditer(text)
        if not _has_visible_effect(text, match.start(), match.end())
    ]


def code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def _describe(run: str) -> str:
    """The marker's title: what the run is, by name."""
    distinct = list(dict.fromkeys(run))
    names = ", ".join(f"{code_point(ch)} {unicodedata.name(ch, 'unassigned')}" for ch in distinct[:6])
    if len(distinct) > 6:
        names += f" and {len(distinct) - 6} more"
    what = f"{len(run)} hidden characters: " if len(run) > 1 else "Hidden character: "
    title = what + names
    if any(ch in BIDI_CONTROLS for ch in run):
        title += ". Bidirectional controls reorder text; shown here instead of applied"
    tags = "".join(chr(ord(ch) - 0xE0000) for ch in run if 0xE0020 <= ord(ch) <= 0xE007E)
    if len(tags) > 1:  # tag characters mirror ASCII: a hidden message, spelled out
        title += f'. As tag characters they spell "{tags[:300]}{"…" if len(tags) > 300 else ""}"'
    return title


def label(run: str) -> str:
    """The marker's visible text: the code points, or the first ones and the count."""
    distinct = list(dict.fromkeys(run))
    if len(run) <= 3:
        return " ".join(code_point(ch) for ch in run)
    if len(distinct) == 1:
        return f"{code_point(run[0])} ×{len(run)}"
    return f"{code_point(distinct[0])} {code_point(distinct[1])} … ×{len(run)}"


def marker(run: str) -> Markup:
    return Markup('<span class="hidden-char" title="{}">{}</span>').format(_describe(run), label(run))


def split(text: str) -> list[tuple[str, bool]]:
    """`text` as consecutive (piece, hidden) pairs, hidden pieces being runs to mark."""
    if not _CANDIDATES.search(text):  # nearly every text: nothing to do
        return [(text, False)] if text else []
    pieces, last = [], 0
    for start, end in hidden_runs(text):
        pieces += [(text[last:start], False), (text[start:end], True)]
        last = end
    pieces.append((text[last:], False))
    return [(piece, hidden) for piece, hidden in pieces if piece]


def cap(text: str, markers_left: int) -> tuple[str, int]:
    """`text` with its hidden runs past the first `markers_left` replaced by OVERFLOW, and how many
    runs it held (a caller carries the count across the pieces of one text)."""
    runs = hidden_runs(text) if _CANDIDATES.search(text) else []
    past = runs[max(markers_left, 0) :]
    if not past:
        return text, len(runs)
    pieces, last = [], 0
    for start, end in past:
        pieces += [text[last:start], OVERFLOW]
        last = end
    pieces.append(text[last:])
    return "".join(pieces), len(runs)


def mark(text: str, escape: Callable[[str], str] = escape) -> str:
    """`text` escaped with `escape`, each hidden run replaced by its marker (HTML)."""
    return "".join(str(marker(piece)) if hidden else escape(piece) for piece, hidden in split(text))


def spelled_out(text: str) -> str:
    """`text` with each hidden run written as plain text ("⟨U+202E⟩"): for places that take no
    markup, such as attribute values."""
    if not _CANDIDATES.search(text):
        return text
    return "".join(f"⟨{label(piece)}⟩" if hidden else piece for piece, hidden in split(text))
