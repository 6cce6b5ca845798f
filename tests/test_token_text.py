"""How tokens read in the feature browser (e2e_sae.token_text): partial UTF-8 bytes as <0xE2>, whitespace
as visible marks, on the built-in byte-level BPE tokenizer and a SentencePiece-style one."""

from e2e_sae.token_text import show_token, token_strings


def test_bytes_that_are_not_whole_characters_show_as_hex_and_whitespace_as_marks():
    assert show_token(b"\xe2\x80") == "<0xE2><0x80>"
    assert show_token(b" \xe2") == "␣<0xE2>"
    assert show_token("é".encode()) == "é"  # a whole character decodes
    assert show_token("a\tb\n\r c") == "a⇥b↵␍␣c"
    assert show_token("\x0b\x7f") == "<0x0B><0x7F>"
    assert show_token("<script>") == "<script>"  # plain text: HTML escaping is the page's job


def test_every_builtin_token_shows_as_something_visible():
    """The built-in model's 4096 tokens: none reads as U+FFFD, none is blank; multi-byte characters
    split over tokens show their bytes."""
    from e2e_sae.builtin.assets import builtin_tokenizer

    tok = builtin_tokenizer()
    shown = token_strings(tok, list(range(len(tok))))
    for i, text in shown.items():
        assert text and "\ufffd" not in text and not any(c.isspace() for c in text), (i, text)
    ids = tok.encode("x = '—'\n\tpass")
    joined = "".join(shown[i] for i in ids)
    assert joined == "x␣=␣'<0xE2><0x80><0x94>'↵⇥pass"


class SentencePieceLike:
    """Byte-fallback tokens spelled <0xNN>, which decode alone to U+FFFD."""

    pieces = {0: "<0xE2>", 1: "▁the", 2: "\n"}

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.pieces[i]

    def decode(self, ids: list[int]) -> str:
        return {0: "\ufffd", 1: " the", 2: "\n"}[ids[0]]


def test_sentencepiece_byte_tokens_and_no_tokenizer():
    assert token_strings(SentencePieceLike(), [0, 1, 2]) == {0: "<0xE2>", 1: "␣the", 2: "↵"}
    assert token_strings(None, [7]) == {7: "#7"}
