"""The text of one request's generated tokens as it grows: incremental decoding and stop strings.

A byte-level tokenizer splits characters (emoji, CJK) across tokens, so each token's text is the
difference of two decodes, held back while it ends in an incomplete character (U+FFFD), the way
``inference.generation.token_pieces`` shows a tokenization. Text is cut at the first stop string,
as ``solo generate --stop`` cuts it; while streaming, a tail that could still become a stop
string is held back, so no client ever receives part of one.
"""

from __future__ import annotations


class TextStream:
    """Generated tokens in, text out: ``add`` each token, ``take`` the text that is safe to send."""

    def __init__(self, tokenizer, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop string was found; ``text`` ends before it
        self._prefix = self._read = 0  # decode from ``prefix`` (context for the first char); ``read``: tokens in ``text``
        self._sent = 0

    def add(self, token: int) -> None:
        """Append a generated token (not the end-of-sequence one) and look for a stop string."""
        self.ids.append(token)
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, len(self.ids))
        if len(after) > len(before) and not after.endswith("\ufffd") and after.startswith(before):
            self._extend(after[len(before) :])
            self._prefix, self._read = self._read, len(self.ids)

    def finish(self) -> None:
        """The last token came: whatever is still held back (a cut character) joins the text."""
        if self._read < len(self.ids) and not self.stopped:
            before = self._decode(self._prefix, self._read)
            self._extend(self._decode(self._prefix, len(self.ids))[len(before) :])
            self._read = len(self.ids)

    def take(self, final: bool = False) -> str:
        """The text not handed out yet, less a tail that could begin a stop string (unless ``final``)."""
        end = len(self.text) if final or self.stopped else len(self.text) - self._held_back()
        piece = self.text[self._sent : end] if end > self._sent else ""
        self._sent = max(self._sent, end)
        return piece

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True) if end > start else ""

    def _extend(self, piece: str) -> None:
        old = len(self.text)
        self.text += piece
        if not self.stops:
            return
        found = [i for s in self.stops if (i := self.text.find(s, max(0, old - len(s) + 1))) >= 0]
        if found:
            self.text = self.text[: min(found)]
            self.stopped = True

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is the start of a stop string."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
