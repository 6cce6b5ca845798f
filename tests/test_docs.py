"""Every command and Python snippet in README.md and docs/*.md runs, and the output they show is printed.

The fences run in document order, in a temporary directory per doc file where `e2e_sae/` and `sweeps/`
are the checkout's (their configs are what the docs name) and `sweeps_results/quickstart` is a
quickstart experiment made once per session by the README's own sweep command on short settings
(tests/doc_fences.py: the `<!-- doc-test: ... -->` markers). A fence marked skip is not run: its
reason is the record, and test_every_skipped_fence_says_why keeps one there. Shown output is checked
by lines: names and words as shown, numbers free (the runs here are shorter), `...` for any lines.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from doc_fences import ROOT, Fence, all_fences, missing_output, shell_steps, short_args

RUN_SHORT = {
    "train.n_samples": "32",
    "train.checkpoint_every_n_samples": "16",
    "train.warmup_samples": "8",
    "data.n_eval_samples": "4",
    "train.act_frequency_n_tokens": "1024",
}
# The quickstart's layout (modes, layers, two seeds, grouped, a target search) on 64 samples a trial.
SWEEP_SHORT = {
    **{f"overrides.{k}": v for k, v in {**RUN_SHORT, "train.n_samples": "64"}.items()},
    "checkpoint_every_n_samples": "32",
    "search.max_trials_per_curve": "2",
}
# A grid sweep (no search budget to cut): one mode at one layer, 64 samples a trial.
GRID_SHORT = {
    **{k: v for k, v in SWEEP_SHORT.items() if not k.startswith("search.")},
    "axes.mode": "[local]",
    "axes.layer": "[1]",
}
SHORT = {
    "run": {"python -m e2e_sae.train": RUN_SHORT},
    "sweep": {"python -m sweeps run": SWEEP_SHORT},
    # train, evaluate and grid-sweep commands side by side (docs/architectures.md)
    "grid": {
        "python -m e2e_sae.train": RUN_SHORT,
        "python -m e2e_sae.evaluate": {"data.n_eval_samples": "4"},
        "python -m sweeps run": GRID_SHORT,
    },
}
FENCES = all_fences()
RUNNABLE = [f for f in FENCES if f.kind != "data" or {"output-of", "file"} & set(f.markers)]
SYNOPSIS = re.compile(r"\[--|\[[A-Z]|(?:^|\s)[A-Z][A-Z0-9_]{2,}(?:/[A-Z]+)?(?=\s|$)")


class DocRun:
    """The session's directories, the experiment, and what each command printed (for output-of)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shared = self.workdir("shared")
        self.printed: list[tuple[str, str]] = []
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.helps: dict[str, str] = {}
        # No proxies (nothing leaves the machine) and no RAY_ADDRESS: `sweeps run` starts its own cluster.
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "RAY_ADDRESS"}
        self.env.update(
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            WANDB_MODE="disabled",
            PYTHONPATH=str(ROOT),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    def workdir(self, name: str) -> Path:
        d = self.tmp / re.sub(r"\W", "_", name)
        if not d.exists():
            d.mkdir()
            for entry in ("e2e_sae", "sweeps", "tests", "pyproject.toml"):
                (d / entry).symlink_to(ROOT / entry)
            if name != "shared":
                (d / "sweeps_results").symlink_to(self.shared / "sweeps_results")
        return d

    def help(self, fence: Fence, command: str, cwd: Path) -> str:
        """A program's --help, once per session (a heavy import is seconds on a loaded machine)."""
        if command not in self.helps:
            self.helps[command] = self.sh(fence, command, cwd)
        return self.helps[command]

    def sh(self, fence: Fence, command: str, cwd: Path) -> str:
        command = short_args(command, SHORT.get(fence.marker("short") or "", {}))
        proc = subprocess.run(
            ["bash", "-c", f"set -eo pipefail; {command}"],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        printed = proc.stdout + proc.stderr
        self.printed.append((command, printed))
        if proc.returncode != 0:
            pytest.fail(f"{fence.id}: `{command}` exited {proc.returncode}:\n{printed[-3000:]}", pytrace=False)
        return printed


@pytest.fixture(scope="session")
def docs(tmp_path_factory) -> DocRun:
    run = DocRun(tmp_path_factory.mktemp("docs"))
    makers = [f for f in FENCES if f.marker("makes") == "quickstart"]
    assert len(makers) == 1, f"one fence must be marked makes=quickstart, found {[f.id for f in makers]}"
    for step in shell_steps(makers[0]):
        run.sh(makers[0], step.command, run.shared)
    assert (run.shared / "sweeps_results" / "quickstart").is_dir(), f"{makers[0].id} made no quickstart experiment"
    return run


def _check_synopsis(docs: DocRun, fence: Fence, command: str, cwd: Path) -> None:
    """A usage line (PATH, [--flag]): the program's --help names every flag it shows."""
    command = command.split(" #")[0]
    words = command.split()
    assert words[:2] == ["python", "-m"], f"{fence.id}: `{command}` is a usage line of no module; mark it skip"
    sub = [words[3]] if len(words) > 3 and re.fullmatch(r"[a-z]+", words[3]) else []
    helped = docs.help(fence, " ".join(["python", "-m", words[2], *sub, "--help"]), cwd)
    flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", command))
    unknown = sorted(flag for flag in flags if flag not in helped)
    assert not unknown, f"{fence.id}: `{command}` shows {unknown}, which `--help` does not know"


def _run_python(docs: DocRun, fence: Fence, source: str, cwd: Path, mode: str = "exec") -> str:
    namespace = docs.namespaces.setdefault(fence.path, {"__name__": "__doc__"})
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, fence.id, mode), namespace)
    except Exception:
        pytest.fail(f"{fence.id}: the Python snippet raised:\n{traceback.format_exc(limit=-4)}", pytrace=False)
    finally:
        os.chdir(old)
    return out.getvalue()


def _run_shell_fence(docs: DocRun, fence: Fence, cwd: Path) -> None:
    for step in shell_steps(fence):
        if step.command.startswith(">>> ") and fence.marker("skip-repl") is not None:
            continue  # another venv's Python (its reason is in the doc)
        if step.command.startswith(">>> "):
            printed = _run_python(docs, fence, step.command[4:], cwd, mode="single")
        elif SYNOPSIS.search(step.command.split(" #")[0]):
            _check_synopsis(docs, fence, step.command, cwd)
            continue
        else:
            printed = docs.sh(fence, step.command, cwd)
        missing = missing_output(step.shown, printed)
        assert not missing, f"{fence.id}: `{step.command}` did not print {missing}; it printed:\n{printed[-3000:]}"


def _write_file(fence: Fence, cwd: Path) -> None:
    """A yaml fence that is a file a later command reads, over its base config's keys when it shows
    only what it adds ("quickstart_e2e.yaml plus:")."""
    data = yaml.safe_load(fence.text())
    base = fence.marker("base")
    if base:
        data = {**yaml.safe_load((ROOT / base).read_text()), **data}
    (cwd / (fence.marker("file") or "")).write_text(yaml.safe_dump(data))


def _check_output(docs: DocRun, fence: Fence) -> None:
    wanted = fence.marker("output-of") or ""
    runs = [printed for command, printed in docs.printed if wanted in command]
    assert runs, f"{fence.id}: output-of={wanted!r}, but no command run so far contains it"
    missing = missing_output(fence.text().splitlines(), runs[-1])
    assert not missing, f"{fence.id}: `{wanted}` did not print {missing}; it printed:\n{runs[-1][-3000:]}"
    for count in re.findall(r"^trials: (\d+) finished$", runs[-1], re.M):  # the summary's count is its rows'
        rows = re.findall(r"^\S+\s+finished\s", runs[-1], re.M)
        assert int(count) == len(rows), f"{fence.id}: 'trials: {count} finished' over {len(rows)} finished rows"


@pytest.mark.slow
@pytest.mark.parametrize("fence", RUNNABLE, ids=[f"{f.id}-{f.kind}" for f in RUNNABLE])
def test_doc_fence_runs(docs: DocRun, fence: Fence) -> None:
    if fence.marker("skip") is not None or fence.marker("makes") is not None:
        return  # not run here (its reason is in the doc) / run by the docs fixture
    cwd = docs.workdir(fence.path)
    for command in fence.markers.get("before", []):
        docs.sh(fence, command, cwd)
    if fence.marker("file") is not None:
        _write_file(fence, cwd)
    elif fence.marker("output-of") is not None:
        _check_output(docs, fence)
    elif fence.kind == "python":
        source = fence.text()
        if source.lstrip().startswith(">>> "):
            for line in source.splitlines():
                if line.startswith(">>> "):
                    _run_python(docs, fence, line[4:], cwd, mode="single")
        else:
            _run_python(docs, fence, source, cwd)
    else:
        _run_shell_fence(docs, fence, cwd)


def test_a_yaml_fence_headed_by_a_file_path_is_that_file() -> None:
    """`# sweeps/configs/quickstart_grid.yaml` over a yaml fence: the fence is the shipped file's content."""
    shown = [f for f in FENCES if f.lang == "yaml" and re.fullmatch(r"# \S+\.ya?ml", f.body.splitlines()[0])]
    assert shown, "no yaml fence names its file any more; drop this test"
    for f in shown:
        path = ROOT / f.body.splitlines()[0][2:]
        assert path.is_file(), f"{f.id}: {path.relative_to(ROOT)} does not exist"
        assert yaml.safe_load(f.body) == yaml.safe_load(path.read_text()), f"{f.id}: differs from {path.name}"


def test_every_skipped_fence_says_why() -> None:
    unexplained = [f.id for f in FENCES if f.marker("skip") is not None and len(f.marker("skip") or "") < 10]
    assert not unexplained, f"fences marked skip without a reason: {unexplained}"


def test_markers_steer_runnable_fences() -> None:
    """A short/replace/makes marker on a data fence would be a typo'd fence language: nothing runs it."""
    stray = [f.id for f in FENCES if f.kind == "data" and set(f.markers) & {"short", "makes", "before"}]
    assert not stray, f"doc-test markers on fences that are not run: {stray}"
    for f in FENCES:
        for value in f.markers.get("short", []):
            assert value in SHORT, f"{f.id}: short={value!r}, known: {sorted(SHORT)}"


def test_output_lines_match_by_names_and_words() -> None:
    """The output check itself: numbers may differ, a name or word may not."""
    printed = "trials: 24 finished\ne2e_L1_r8_s0.3495_seed1   finished   494.7\nreport: /tmp/x/report.md\n"
    ok = ["trials: 46 finished", "...", "e2e_L1_r8_s0.6908_seed0  finished  153.1", "report: /path/to/report.md"]
    assert missing_output(ok, printed) == []
    assert missing_output(["trials: 46 errored"], printed) == ["trials: 46 errored"]
    assert missing_output(["e2e+ds_L1_r8_s0.6908_seed0 finished 1"], printed) != []


def test_shell_steps_join_continuations_and_drop_installs() -> None:
    fence = Fence(
        "x.md",
        1,
        "bash",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && \\\n"
        "  python -m sweeps run a.yaml  # the job\n# a comment\n",
    )
    assert [s.command for s in shell_steps(fence)] == ["python -m sweeps run a.yaml"]
    assert shlex.split(short_args("python -m sweeps run a.yaml", SHORT["sweep"]))[-1].startswith("search.")
