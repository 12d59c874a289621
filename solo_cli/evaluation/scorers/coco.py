"""METEOR, ROUGE-L and CIDEr(-D) as the official E2E scorer computes them: the MS-COCO caption code on Java.

``pycocoevalcap``'s own jars and options, with explicit process lifetimes: Java's output is
captured, its temporary files are deleted, and a JVM is never left behind.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path

# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing.
_PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_JAVA_TIMEOUT_S = 1800


class JavaError(RuntimeError):
    """The METEOR process ended or answered what it should not."""


def coco_dir() -> Path | None:
    """The installed ``pycocoevalcap`` folder, if it has the two jars we need."""
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    except ImportError:
        return None
    root = Path(ptb.__file__).resolve().parent.parent
    needed = (root / "tokenizer" / "stanford-corenlp-3.4.1.jar", root / "meteor" / "meteor-1.5.jar")
    return root if all(p.is_file() for p in needed) else None


class PTBTokenizer:
    """pycocoevalcap's ``PTBTokenizer``: the same Java command and punctuation filter, but the input
    goes to a private temporary folder (not into site-packages) that is always removed, and Java's
    stdout/stderr are captured."""

    def __init__(self, java: str, jar_dir: Path, lines: list[str]) -> None:
        self.error: str | None = None
        self._count = len(lines)
        self._tmp = tempfile.TemporaryDirectory(prefix="solo-ptb-")
        self._proc: subprocess.Popen | None = None
        path = Path(self._tmp.name) / "sentences.txt"
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
        cmd = [java, "-cp", str(jar_dir / "stanford-corenlp-3.4.1.jar"), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", str(path)]
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=jar_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self.error = f"could not start: {exc}"
            self.close()

    def result(self) -> list[str] | None:
        """The tokenized lines (lower-cased, punctuation tokens removed), or None with ``error`` set."""
        if self._proc is None:
            return None
        try:
            out, err = self._proc.communicate(timeout=_JAVA_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.error = f"took longer than {_JAVA_TIMEOUT_S} s"
            return None
        finally:
            self.close()
        lines = out.decode("utf-8", errors="replace").split("\n")
        if self._proc.returncode != 0 or len(lines) < self._count:
            detail = err.decode("utf-8", errors="replace").strip().splitlines()
            self.error = f"exited with code {self._proc.returncode}" + (f": {detail[-1]}" if detail else "")
            return None
        return [" ".join(w for w in line.rstrip().split(" ") if w not in _PTB_PUNCTUATION) for line in lines[: self._count]]

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()


class Meteor:
    """pycocoevalcap's ``Meteor`` wrapper (same jar, options and SCORE/EVAL protocol) with an explicit
    lifetime: ``close()`` ends the JVM instead of relying on ``__del__``. ``-Dfile.encoding=UTF-8``
    is added so that non-ASCII text reads the same whatever the locale (we send UTF-8).

    ``start()`` sends the work from background threads (the SCORE lines are written without waiting
    for each answer), so METEOR runs while ROUGE-L and CIDEr are computed; ``result()`` waits for it.
    """

    def __init__(self, java: str, jar_dir: Path) -> None:
        self._error: str | None = None
        self._value: float | None = None
        self._threads: list[threading.Thread] = []
        cmd = [java, "-Dfile.encoding=UTF-8", "-Xmx2G", "-jar", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                cmd, cwd=jar_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            self._proc = None
            self._error = f"could not start Java: {exc}"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._error is None

    def start(self, hyps: list[str], refs: list[list[str]]) -> None:
        """Send one corpus; the METEOR process answers each request in order, so it can be reused."""
        self._value, self._threads = None, []
        if self._proc is None:
            return
        lines = []
        for hyp, ref_set in zip(hyps, refs):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(ref_set), hyp)) + "\n")
        writer = threading.Thread(target=self._write, args=("".join(lines),), daemon=True)
        reader = threading.Thread(target=self._talk, args=(len(lines),), daemon=True)
        self._threads = [writer, reader]
        writer.start()
        reader.start()

    def _write(self, text: str) -> None:
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(text.encode("utf-8"))
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self._error = self._error or f"lost the METEOR process: {exc}"

    def _readline(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        answer = self._proc.stdout.readline()
        if not answer:
            raise JavaError(f"the METEOR process ended (exit code {self._proc.poll()})")
        return answer.decode("utf-8").strip()

    def _talk(self, count: int) -> None:
        try:
            stats = [self._readline() for _ in range(count)]
            self._threads[0].join()
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode("utf-8"))
            self._proc.stdin.flush()
            for _ in range(count):  # one score per segment, then the corpus score
                self._readline()
            self._value = float(self._readline())
        except (JavaError, OSError, ValueError) as exc:
            self._error = self._error or str(exc)

    def result(self) -> float | None:
        """The corpus METEOR score, or None (see ``error``)."""
        for thread in self._threads:
            thread.join(_JAVA_TIMEOUT_S)
        if self._threads and self._threads[-1].is_alive():
            self._error = f"METEOR took longer than {_JAVA_TIMEOUT_S} s"
            return None
        return self._value

    @property
    def error(self) -> str:
        return self._error or "METEOR did not run"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for thread in self._threads:
            thread.join(10)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        proc.wait()


def rouge_l(hyps: list[str], refs: list[list[str]]) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    ids = range(len(hyps))
    value, _ = Rouge().compute_score({i: refs[i] for i in ids}, {i: [hyps[i]] for i in ids})
    return float(value)


def cider(hyps: list[str], refs: list[list[str]]) -> float:
    from pycocoevalcap.cider.cider import Cider

    ids = range(len(hyps))
    value, _ = Cider().compute_score({i: refs[i] for i in ids}, {i: [hyps[i]] for i in ids})
    return float(value)
