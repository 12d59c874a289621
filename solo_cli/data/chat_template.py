"""A conversation rendered through the tokenizer's chat template: the one place a template that raises is caught.

Chat templates check what they render and refuse with jinja's ``raise_exception`` (Mistral and Llama 2:
"Conversation roles must alternate user/assistant/user/assistant/..."; Gemma: "System role not supported";
others: "Only user and assistant roles are supported"), which transformers raises as jinja2's
``TemplateError``. Training, eval and generate all render through :func:`render_chat`, so that refusal
becomes one line quoting the template and naming the row (exit 2), never a jinja2 traceback.
"""

from __future__ import annotations

from ..errors import UsageError


class TemplateRefused(UsageError):
    """The chat template raised while rendering a conversation. ``where`` names its row (``rows.jsonl:7``) once
    known, ``index`` its place in a dataset until then; ``broken``: the template itself does not parse."""

    def __init__(self, reason: str, where: str | None = None, broken: bool = False, index: int | None = None) -> None:
        self.reason, self.where, self.broken, self.index = reason, where, broken, index
        if broken:
            text = f"the model's chat template cannot be rendered ({reason}); fix the tokenizer's chat_template"
        else:
            text = f'the model\'s chat template refused it: "{reason}"; write the messages as that template expects them'
        super().__init__(f"{where}: {text}" if where else text)

    def at(self, where: str) -> TemplateRefused:
        """The same refusal, naming the row it happened at."""
        return TemplateRefused(self.reason, where, self.broken)

    def at_index(self, index: int) -> TemplateRefused:
        """The same refusal, at row ``index`` of a dataset (named by whoever knows the dataset's rows)."""
        return TemplateRefused(self.reason, self.where, self.broken, index)

    def __reduce__(self):  # rebuilt from its parts when it crosses processes (datasets.map with num_proc)
        return TemplateRefused, (self.reason, self.where, self.broken, self.index)


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False, where: str | None = None) -> str:
    """``messages`` as the text the chat template makes of them (with the generation prompt if asked).

    Raises :class:`TemplateRefused` (naming ``where`` if given) where the template raises.
    """
    from jinja2 import TemplateError, TemplateSyntaxError  # transformers' own dependency, as are its templates

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(f"line {exc.lineno}: {exc.message}", where, broken=True) from None
    except TemplateError as exc:
        raise TemplateRefused(str(exc).strip() or type(exc).__name__, where) from None
