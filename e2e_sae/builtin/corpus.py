"""The built-in corpus: CPython 3.11.7's standard-library ``.py`` sources, shipped as one archive.

Why shipped rather than read from the running interpreter: every Python version (and every distro's
patched build) has a different standard library, so a corpus read from "this interpreter" gave a
different split, tokenizer, model and set of numbers on every machine. One archive in the package makes
``builtin:pycode`` the same on CPython 3.10-3.13 and anywhere else; the interpreter no longer decides the
data. The archive is written deterministically (sorted members, zeroed times and owners, gzip mtime 0),
so regenerating it from the same standard library gives the same bytes, hence the same sha256.

gzip rather than xz (2.8 MB against 2.0 MB here): zlib is in every CPython that can run pip, while lzma
is an optional module some source builds lack.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import platform
import sysconfig
import tarfile
from pathlib import Path

from e2e_sae.builtin import catalog

SOURCE_HEADER = "E2E_SAE.source"  # pax global header: where the files came from
LICENCE_MEMBER = "LICENSE.txt"  # the licence of the sources, as CPython names it in its stdlib directory


class Corpus:
    """The corpus files (POSIX paths relative to the stdlib root, sorted) and their bytes, where they came
    from (e.g. "CPython 3.11.7 standard library"; the archive's header carries it) and their licence text
    (the archive's ``LICENSE.txt`` member; no corpus file is named so, they all end in ``.py``)."""

    def __init__(self, sources: dict[str, bytes], source: str, licence: str):
        self.sources = dict(sorted(sources.items()))
        self.source = source
        self.licence = licence

    @property
    def files(self) -> list[str]:
        return list(self.sources)

    def split_files(self, split: str) -> list[str]:
        """The files of ``split`` in sorted path order (see :func:`catalog.split_of`)."""
        catalog.check_split(split)
        return [f for f in self.sources if catalog.split_of(f) == split]

    def text(self, relpath: str) -> str:
        return self.sources[relpath].decode("utf-8", errors="replace")

    def n_bytes(self, files: list[str]) -> int:
        return sum(len(self.sources[f]) for f in files)


def stdlib_corpus(root: Path | None = None) -> Corpus:
    """Every ``.py`` file under ``root`` (a standard library; default this interpreter's), pruning
    ``catalog.EXCLUDED_DIRS`` at any depth: installed packages and the test suites, which are mostly
    generated fixtures. How the shipped archive was made, on CPython 3.11.7."""
    if root is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        source = f"{platform.python_implementation()} {platform.python_version()} standard library"
    else:
        source = f"the Python standard library in {root}"
    licence_path = Path(root) / LICENCE_MEMBER  # CPython installs it there; some distributions move it
    licence = licence_path.read_text() if licence_path.is_file() else ""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in catalog.EXCLUDED_DIRS]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.endswith(".py"):
                found[(rel / name).as_posix()] = (Path(dirpath) / name).read_bytes()
    return Corpus(found, source, licence)


def write_archive(corpus: Corpus, path: Path) -> str:
    """Write ``corpus`` to ``path`` (a deterministic ``.tar.gz``) atomically; returns its sha256."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        headers = {SOURCE_HEADER: corpus.source}
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, pax_headers=headers) as tar:
            members = {LICENCE_MEMBER: corpus.licence.encode(), **corpus.sources}
            for relpath, data in members.items():
                info = tarfile.TarInfo(relpath)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def read_archive(path: Path) -> Corpus:
    sources = {}
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            if fh is not None:  # regular files only
                sources[member.name] = fh.read()
        source = tar.pax_headers.get(SOURCE_HEADER, str(path))
    licence = sources.pop(LICENCE_MEMBER, b"").decode()
    return Corpus(sources, source, licence)


@functools.lru_cache(maxsize=1)
def shipped_corpus() -> Corpus:
    """The corpus in the package (read once per process: about 0.1 s, 12 MB in memory)."""
    path = catalog.ASSETS_DIR / catalog.CORPUS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the built-in corpus {path} is missing from this installation: reinstall the package "
            "(pip install -e .), which ships it as package data"
        )
    return read_archive(path)
