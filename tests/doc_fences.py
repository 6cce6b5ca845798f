"""The code fences of README.md and docs/*.md, read for tests/test_docs.py.

A fence is run when it is a command (```bash / sh / shell / console, or an unlabeled fence whose
first line is a command or a `$ ` prompt) or Python (```python, or `>>> ` lines). Any other fence
(yaml, jsonc, text, a layout, an error message) is data. HTML comments right above a fence steer it,
invisible in the rendered page:

    <!-- doc-test: skip="why it cannot run here" -->        not run; the reason is the record
    <!-- doc-test: skip-repl="why" -->                     its `>>> ` lines are not run (another venv's)
    <!-- doc-test: short=run -->                            train commands get tests' short settings
    <!-- doc-test: short=sweep -->                          sweep commands get tests' short settings
    <!-- doc-test: replace="OLD => NEW" -->                 a text substitution before it runs
    <!-- doc-test: output-of="COMMAND TEXT" -->             this text fence is the printed output of the
                                                            last command run that contains COMMAND TEXT
    <!-- doc-test: makes=quickstart -->                     this command makes sweeps_results/quickstart,
                                                            which the other fences read (run first)
    <!-- doc-test: before="COMMAND" -->                     a command run first (what the doc's text
                                                            says exists: a run directory)
    <!-- doc-test: file=NAME base=CONFIG -->                this yaml fence is the file NAME that a
                                                            later command reads (over CONFIG's keys)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_WORDS = ("python", "python3", "huggingface-cli", "ray", "export", "for", "/usr/bin/time", "pip", "ls")
KEYS = {"skip", "skip-repl", "short", "replace", "output-of", "makes", "before", "file", "base"}
MARKER = re.compile(r"^\s*<!--\s*doc-test:(.*?)-->\s*$")
OPEN = re.compile(r"^(\s*)```(\S*)\s*$")
# Install steps of a `&&` chain: the test runs in the environment it was started in.
INSTALL_STEP = re.compile(r"^(python3? -m venv\b|\. \S+/activate$|source \S+/activate$|pip install\b)")


@dataclass
class Fence:
    path: str  # relative to the repository root
    line: int  # of the opening ```
    lang: str
    body: str
    markers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def marker(self, key: str) -> str | None:
        values = self.markers.get(key)
        return values[-1] if values else None

    @property
    def kind(self) -> str:
        """shell, python or data."""
        first = next((ln.strip() for ln in self.body.splitlines() if ln.strip()), "")
        if self.lang == "python" or (not self.lang and first.startswith(">>> ")):
            return "python"
        if self.lang in SHELL_LANGS or (not self.lang and (first.startswith("$ ") or _is_command(first))):
            return "shell"
        return "data"

    def text(self) -> str:
        """The body after the fence's replace markers."""
        body = self.body
        for rule in self.markers.get("replace", []):
            old, sep, new = rule.partition(" => ")
            assert sep, f"{self.id}: replace={rule!r} needs 'OLD => NEW'"
            assert old in body, f"{self.id}: replace: {old!r} is not in the fence (the doc changed?)"
            body = body.replace(old, new)
        return body


def _is_command(line: str) -> bool:
    word = line.split(" ", 1)[0]
    return word in COMMAND_WORDS or bool(re.match(r"^[A-Z_][A-Z0-9_]*=\S+$", word))


def _parse_marker(text: str, where: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        assert key in KEYS, f"{where}: unknown doc-test key {key!r} (known: {', '.join(sorted(KEYS))})"
        out.setdefault(key, []).append(value)
    return out


def read_fences(path: str) -> list[Fence]:
    lines = (ROOT / path).read_text().splitlines()
    fences: list[Fence] = []
    pending: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        marker, opened = MARKER.match(lines[i]), OPEN.match(lines[i])
        if marker:
            for key, values in _parse_marker(marker.group(1), f"{path}:{i + 1}").items():
                pending.setdefault(key, []).extend(values)
        elif opened:
            indent, end = len(opened.group(1)), i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1 : end])
            fences.append(Fence(path, i + 1, opened.group(2), body, pending))
            pending, i = {}, end
        elif lines[i].strip():
            pending = {}  # a marker steers only the fence right below it (blank lines allowed)
        i += 1
    return fences


def all_fences() -> list[Fence]:
    return [f for path in DOC_FILES for f in read_fences(path)]


@dataclass
class Step:
    """One command of a shell fence, with the output the doc shows after it (`$ ` fences)."""

    command: str
    shown: list[str]


def shell_steps(fence: Fence) -> list[Step]:
    """A fence's commands: `\\`-continued lines joined, comments dropped, install steps of a `&&`
    chain dropped; in a `$ ` fence the lines after a command are its shown output (`>>> ` lines
    and theirs are Python, returned as commands starting with `>>> `)."""
    lines = fence.text().splitlines()
    prompt = any(ln.startswith("$ ") for ln in lines)
    steps: list[Step] = []
    joined: list[str] = []
    for raw in lines:
        if joined and (joined[-1].endswith("\\") or re.match(r"^\s+\[", raw)):
            joined[-1] = joined[-1].removesuffix("\\").rstrip() + " " + raw.strip()
        else:
            joined.append(raw)
    for ln in joined:
        if prompt and not ln.startswith(("$ ", ">>> ")):
            if steps:
                steps[-1].shown.append(ln)
            continue
        cmd = ln[2:] if ln.startswith("$ ") else ln
        if not prompt and (not cmd.strip() or cmd.lstrip().startswith("#")):
            continue
        if not cmd.startswith(">>> "):
            cmd = re.sub(r"\s+#\s.*$", "", cmd)  # a trailing comment: `--set` arguments go before it
            parts = [p for p in cmd.split(" && ") if not INSTALL_STEP.match(p.strip())]
            cmd = " && ".join(parts)
        if cmd.strip():
            steps.append(Step(cmd, []))
    return steps


NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"


def output_pattern(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: numbers may differ (the test's run is shorter), runs of
    spaces are one or more, `/path/to/` is any absolute path; names and words must be as shown."""
    parts = re.split(rf"(/path/to/|{NUMBER}|\s+)", line.strip())
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        elif part == "/path/to/":
            out.append(r"/\S*/")
        elif part.isspace():
            out.append(r"\s+")
        else:
            out.append(NUMBER)
    return re.compile("".join(out))


def missing_output(shown: list[str], printed: str) -> list[str]:
    """The shown lines (`...` skips any number) not found in order in what the command printed."""
    printed_lines = [ln.strip() for ln in printed.splitlines()]
    missing, at = [], 0
    for line in shown:
        if not line.strip() or line.strip() in {"...", "[...]"} or line.strip().startswith("[..."):
            continue
        pattern = output_pattern(line)
        hit = next((j for j in range(at, len(printed_lines)) if pattern.fullmatch(printed_lines[j])), None)
        if hit is None and not pattern.search(" ".join(printed_lines)):  # `ls` lists one per line in a pipe
            missing.append(line)
        elif hit is None:
            continue
        else:
            at = hit + 1
    return missing


def short_args(command: str, short: dict[str, dict[str, str]]) -> str:
    """Append a profile's `--set` arguments to each train / sweep command of a line."""
    out = []
    for part in command.split(" && "):
        words = shlex.split(part) if "python" in part else []
        for prefix, sets in short.items():
            if " ".join(words[:4]).startswith(prefix):
                part += "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in sets.items())
        out.append(part)
    return " && ".join(out)
