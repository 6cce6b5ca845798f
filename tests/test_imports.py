"""The package's import structure: no cycles (function-level imports count), and every module imports on
its own, so no module works only because another one happened to be imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("e2e_sae", "sweeps")
# Run only inside the reference venv (where ``e2e_sae`` is the authors' package) or the sae-lens venv.
NOT_IMPORTABLE_HERE = {
    "e2e_sae.bench.reference_worker",
    "e2e_sae.bench.reference_hf_worker",
    "e2e_sae.bench.saelens_worker",
}


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root``."""
    mods = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Edges module -> project module it imports, anywhere in the file (top level or inside functions).
    A module importing its own package (``e2e_sae.builtin.assets`` -> ``e2e_sae.builtin``) is no edge."""
    mods = module_files(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_check_finds_a_function_level_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles_among_the_project_modules():
    assert cycles(import_graph(REPO, PACKAGES)) == []


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module in a process that has imported nothing of the project before it: a forked child of
    one interpreter that loaded only the third-party libraries (so the check costs one torch import),
    as many children at once as there are cores."""
    modules = sorted(set(module_files(REPO, PACKAGES)) - NOT_IMPORTABLE_HERE)
    script = textwrap.dedent(f"""
        import importlib, os, sys, traceback
        import torch, transformer_lens, transformers, datasets, ray, ray.tune, yaml, pydantic, matplotlib
        failed, running = [], {{}}

        def reap():
            pid, status = os.wait()
            if status != 0:
                failed.append(running[pid])
            del running[pid]

        for name in {modules!r}:
            if len(running) >= (os.cpu_count() or 1):
                reap()
            pid = os.fork()
            if pid == 0:
                try:
                    sys.argv = [name]
                    importlib.import_module(name)
                except SystemExit:
                    pass
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            running[pid] = name
        while running:
            reap()
        print("FAILED", sorted(failed))
        sys.exit(1 if failed else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def imported_names(path: Path) -> set[str]:
    """Every module name a file imports, anywhere in it (absolute imports; the project uses no others)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


# Who may import whom: the library trains one run and knows nothing of the sweep layer; in the sweep
# layer, planning (the sweep file, trials, the search's maths), reporting and the analysis read what
# a sweep wrote and know nothing of how Tune ran it, and none of them imports Ray. (The report embeds
# the geometry.md an analysis wrote: it imports nothing of sweeps.analysis, which reads reporting's results.)
FORBIDDEN = {
    "e2e_sae": ("sweeps", "ray"),
    "sweeps.planning": ("sweeps.running", "sweeps.reporting.report", "sweeps.analysis", "ray"),
    "sweeps.reporting": ("sweeps.running", "sweeps.analysis", "ray"),
    "sweeps.analysis": ("sweeps.running", "ray"),
    "sweeps.experiment": ("sweeps.running", "sweeps.planning", "sweeps.reporting", "ray"),
}


def layering_violations(root: Path, packages: tuple[str, ...]) -> list[str]:
    found = []
    for mod, path in module_files(root, packages).items():
        for layer, banned in FORBIDDEN.items():
            if mod == layer or mod.startswith(layer + "."):
                found += [
                    f"{mod} imports {name}"
                    for name in sorted(imported_names(path))
                    if any(name == b or name.startswith(b + ".") for b in banned)
                ]
    return found


def test_the_layering_check_finds_a_function_level_import_of_ray(tmp_path):
    (tmp_path / "sweeps" / "planning").mkdir(parents=True)
    (tmp_path / "sweeps" / "__init__.py").write_text("")
    (tmp_path / "sweeps" / "planning" / "__init__.py").write_text("")
    (tmp_path / "sweeps" / "planning" / "x.py").write_text("def f():\n    from ray import tune\n")
    assert layering_violations(tmp_path, ("sweeps",)) == ["sweeps.planning.x imports ray"]


def test_each_layer_imports_only_what_it_may():
    assert layering_violations(REPO, PACKAGES) == []
