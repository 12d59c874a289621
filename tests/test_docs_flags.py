"""The docs cannot drift from the command line: every `solo CMD ... --flag` written in README.md or docs/*.md (code
blocks and inline code) names a real command and a flag that `solo CMD --help` lists, and every relative link
there points to a file (and heading) that exists.

The flags come from the Typer app in-process (click's command tree), not from running `solo --help` per command.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from support import REPO

import solo_cli.cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "<", ">", ">>", "2>"}
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SPAN = re.compile(r"(?<!`)`([^`]+?)`(?!`)")  # inline code, which may wrap onto the next line of its paragraph
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Written:
    """One `solo` command line as a doc writes it: where, and its words after `solo`."""

    where: str
    words: tuple[str, ...]


def _flags_of(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(getattr(param, "secondary_opts", ()))
    return names


def cli_flags() -> tuple[set[str], dict[str, set[str]]]:
    """The root's options and, per command, the flags its --help lists."""
    group = typer.main.get_command(solo_cli.cli.app)
    return _flags_of(group), {name: _flags_of(command) for name, command in group.commands.items()}


def _code_and_prose(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number, line) of code (fenced, or indented 4 spaces after a blank line) and of the rest."""
    code, prose = [], []
    fenced = indented = False
    previous_blank = True
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            previous_blank = False
            continue
        if not fenced:
            indented = line.startswith("    ") and (indented or previous_blank) and line.strip() != ""
        (code if fenced or indented else prose).append((number, line))
        previous_blank = line.strip() == ""
    return code, prose


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Code lines with `\\` continuations joined and a `$ ` prompt taken off."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        text = line.strip()
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text
            pending = None
        if text.endswith("\\"):
            pending = (number, text[:-1])
            continue
        joined.append((number, text[2:] if text.startswith("$ ") else text))
    if pending is not None:
        joined.append(pending)
    return joined


def _words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in a fragment of prose
        return text.split()


def _solo_commands(words: list[str]) -> list[tuple[str, ...]]:
    """The words after `solo` (or `-m solo_cli`) of every command in a shell line (pipes, ;, && split it)."""
    found, segment = [], []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            segment.append(word)
            continue
        while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", segment[0]):  # VAR=value solo ...
            segment.pop(0)
        if segment and segment[0] == "solo":
            found.append(tuple(segment[1:]))
        elif "solo_cli" in segment and segment.index("solo_cli") > 0 and segment[segment.index("solo_cli") - 1] == "-m":
            found.append(tuple(segment[segment.index("solo_cli") + 1 :]))
        segment = []
    return found


def _inline_code(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line number, text) of every inline code span, one that wraps onto the next line included."""
    spans, paragraph = [], []
    for number, line in [*prose, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        text = "\n".join(part for _, part in paragraph)
        for match in SPAN.finditer(text):
            if "\n\n" not in match.group(1):
                spans.append((paragraph[text.count("\n", 0, match.start())][0], match.group(1).replace("\n", " ")))
        paragraph = []
    return spans


def written_commands(path: Path) -> list[Written]:
    text = path.read_text(encoding="utf-8")
    code, prose = _code_and_prose(text)
    pieces = _logical_lines(code) + _inline_code(prose)
    name = path.relative_to(REPO)
    return [Written(f"{name}:{n}", words) for n, piece in pieces for words in _solo_commands(_words(piece))]


def problems(commands: list[Written]) -> list[str]:
    """What is wrong in each written command: an unknown command, or a flag its --help does not list."""
    root, flags = cli_flags()
    wrong = []
    for command in commands:
        words = [w for w in command.words if w not in ("...", "…")]
        if not words or words[0].startswith("-"):  # `solo --version`
            known, options = "solo", words
        elif words[0] not in flags:
            wrong.append(f"{command.where}: `solo {' '.join(words)}`: {words[0]!r} is not a solo command")
            continue
        else:
            known, options = f"solo {words[0]}", words[1:]
        allowed = root if known == "solo" else flags[words[0]]
        for word in options:
            flag = word.split("=", 1)[0]
            if flag.startswith("-") and flag != "-" and not re.fullmatch(r"-[\d.]+(e-?\d+)?", flag) and flag not in allowed:
                wrong.append(f"{command.where}: `solo {' '.join(words)}`: {known} has no {flag}")
    return wrong


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings."""
    seen: dict[str, int] = {}
    anchors = set()
    code, prose = _code_and_prose(path.read_text(encoding="utf-8"))
    for _, line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path) -> list[str]:
    _, prose = _code_and_prose(path.read_text(encoding="utf-8"))
    broken = []
    for number, line in prose:
        for match in LINK.finditer(INLINE.sub("", line)):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO)}:{number}: ({target})"
            if not resolved.exists():
                broken.append(f"{where} points to a missing file")
            elif anchor and resolved.suffix == ".md" and anchor not in github_anchors(resolved):
                broken.append(f"{where}: {resolved.name} has no heading #{anchor}")
    return broken


def test_every_flag_written_in_the_docs_is_one_solo_lists():
    commands = [command for path in DOCS for command in written_commands(path)]
    assert len(commands) > 50  # the extraction found the docs' commands (a broken parser would find none)
    wrong = problems(commands)
    assert not wrong, "\n".join(wrong)


def test_every_relative_link_in_the_docs_points_to_a_file_that_exists():
    broken = [line for path in DOCS for line in broken_links(path)]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("    solo train --data d --no-such-flag 1\n", ["solo train has no --no-such-flag"]),
        ("```console\n$ solo train --data d \\\n    --bogus\n```\n", ["solo train has no --bogus"]),
        ("Run `echo x | solo generate --chat - && solo eval --nope`.\n", ["solo eval has no --nope"]),
        ("```bash\ntorchrun --nproc_per_node 2 -m solo_cli train --fake\n```\n", ["solo train has no --fake"]),
        ("`solo trian --data d`\n", ["'trian' is not a solo command"]),
        ("A span that wraps: `solo train\n--data d --wrapped` and `--not-solo`.\n", ["solo train has no --wrapped"]),
        ("```bash\nsolo train --data d -o runs/x --lr=1e-3  # a --comment\nSOLO_X=1 solo --version\n```\n", []),
    ],
)
def test_the_checker_finds_what_is_wrong_and_only_that(tmp_path, monkeypatch, doc, expected):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc, encoding="utf-8")
    found = problems(written_commands(page))
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found)), found


def test_the_link_checker_finds_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## Checkpoints and `--resume`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#checkpoints-and---resume) [gone](missing.md) [bad](other.md#nope) [web](https://x.org)\n"
        "`[not a link](missing.md)`\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md:1: (missing.md) points to a missing file",
        "page.md:1: (other.md#nope): other.md has no heading #nope",
    ]
