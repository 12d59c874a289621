"""TextStream: text grows a whole character at a time, stops cut it, and a stream never sends part of a stop."""

from __future__ import annotations

from tiny import make_tokenizer

from solo_cli.serving.text import TextStream


def _feed(text: str, stops: list[str], stream: bool = True):
    tokenizer = make_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = TextStream(tokenizer, stops)
    pieces = []
    for token in ids:
        out.add(token)
        if stream:
            pieces.append(out.take())
        if out.stopped:
            break
    out.finish()
    pieces.append(out.take(final=True))
    return out, pieces


def test_characters_split_across_tokens_come_whole():
    text = "café 🙂 שלום"
    out, pieces = _feed(text, [])
    assert out.text == text and "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_text_is_cut_at_the_first_stop_and_no_piece_of_a_stop_is_sent():
    out, pieces = _feed("The Eagle is a French coffee shop by the riverside.", ["coffee", "French c"])
    assert out.stopped and out.text == "The Eagle is a "
    assert "".join(pieces) == "The Eagle is a "
    assert not any("Fre" in piece for piece in pieces)


def test_a_stop_that_never_comes_holds_nothing_back_at_the_end():
    out, pieces = _feed("hello world", ["worlds"])
    assert not out.stopped and "".join(pieces) == "hello world"
