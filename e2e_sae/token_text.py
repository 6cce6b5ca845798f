"""How a token reads on a page: one function, :func:`token_strings`, for every place a token is shown
(the feature browser's contexts and its boosted / suppressed output tokens).

A token decoded on its own is often not text: byte-level BPE (GPT-2's, the built-in model's) splits a
multi-byte character into tokens that each hold a part of it, and decoding one gives U+FFFD (``�``),
the same for every such token. Those bytes are shown instead, as ``<0xE2>`` (SentencePiece's own
spelling of its byte tokens). Whitespace is made visible, so a token of spaces or newlines is not an
empty box and one context stays on one line: ``␣`` space, ``↵`` newline, ``⇥`` tab, ``␍`` carriage
return; other control characters as ``<0x0B>``. Plain text: the caller escapes it for HTML.
"""

from __future__ import annotations

import re
from typing import Any

WHITESPACE_MARKS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte-fallback tokens


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet inverted: the printable stand-in character of each of the 256
    bytes (printable Latin-1 bytes stand for themselves, the rest are shifted to U+0100...)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    shifted = (b for b in range(256) if b not in chars)
    for n, b in enumerate(shifted):
        chars[b] = 256 + n
    return {chr(c): b for b, c in chars.items()}


_BYTE_LEVEL = _byte_level_alphabet()


def token_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    """The raw bytes a token stands for, from its vocabulary piece: a SentencePiece byte token
    (``<0xE2>``) or a byte-level BPE piece (every character in GPT-2's byte alphabet); None when the
    piece is neither."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str) or not piece:
        return None
    if m := _BYTE_PIECE.fullmatch(piece):
        return bytes([int(m[1], 16)])
    if all(c in _BYTE_LEVEL for c in piece):
        return bytes(_BYTE_LEVEL[c] for c in piece)
    return None


def show_token(raw: str | bytes) -> str:
    """A token's text as shown: bytes that are not (complete) UTF-8 as ``<0xE2>``, whitespace as
    visible marks, other control characters as ``<0x0B>``."""
    text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
    out = []
    for ch in text:
        code = ord(ch)
        if ch in WHITESPACE_MARKS:
            out.append(WHITESPACE_MARKS[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"<0x{code - 0xDC00:02X}>")
        elif code < 0x20 or code == 0x7F:
            out.append(f"<0x{code:02X}>")
        else:
            out.append(ch)
    return "".join(out)


def token_strings(tokenizer: Any, ids: list[int]) -> dict[int, str]:
    """Each token id as shown (:func:`show_token`), decoded on its own; a token that decodes to U+FFFD
    is shown as its bytes. ``#id`` when there is no tokenizer."""
    if tokenizer is None:
        return {i: f"#{i}" for i in ids}
    out = {}
    for i in ids:
        text = tokenizer.decode([i])
        raw = token_bytes(tokenizer, i) if "\ufffd" in text else None
        out[i] = show_token(raw if raw is not None else text)
    return out
