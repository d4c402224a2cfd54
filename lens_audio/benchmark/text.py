"""Text compared as a reader sees it: the one normalisation that loading and scoring share.

Two strings that print the same are the same answer: `reader_text` puts text in Unicode NFC (so "café" typed as
`e` + a combining accent equals the precomposed `é`), turns every run of whitespace (spaces, tabs, newlines,
no-break spaces) into one space and strips the ends. `choice_key` also ignores case: it is how `load_mmau` tells
two choices apart (look-alike choices are refused) and finds which choice an answer names; `scoring` reads the
words of answers, choices and outputs after `reader_text`. The text a model is shown is never changed.
"""

from __future__ import annotations

import unicodedata


def reader_text(text: str) -> str:
    """`text` in Unicode NFC, each run of whitespace (`str.isspace`: spaces, tabs, newlines, no-break spaces) one
    space, no space at either end."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def choice_key(text: str) -> str:
    """What identifies a choice (or the answer naming it): `reader_text`, case-folded."""
    return reader_text(text).casefold()
