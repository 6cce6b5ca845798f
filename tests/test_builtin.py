"""The built-in offline model and corpus (builtin:pycode): the shipped corpus, split, tokenizer, token
cache, shipped model quality, the integrity check of the shipped files, and a rebuild."""

import inspect
import json
import logging
import shutil
import time

import pytest
import torch

from e2e_sae.builtin import assets, build, catalog
from e2e_sae.builtin.corpus import Corpus, read_archive, shipped_corpus, stdlib_corpus, write_archive
from e2e_sae.lm import load_language_model
from e2e_sae.native_lm import load_native_lm
from e2e_sae.optim import lr_factor

MANIFEST = catalog.read_manifest(catalog.ASSETS_DIR)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_SAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_corpus_is_the_one_the_manifest_records():
    corpus = shipped_corpus()
    rec = MANIFEST["corpus"]
    assert catalog.sha256_file(catalog.ASSETS_DIR / catalog.CORPUS_FILE) == rec["sha256"]
    assert corpus.source == rec["source"] == "CPython 3.11.7 standard library"
    train, eval_ = corpus.split_files("train"), corpus.split_files("eval")
    assert (len(train), len(eval_)) == (rec["n_train_files"], rec["n_eval_files"]) == (701, 33)
    assert (corpus.n_bytes(train), corpus.n_bytes(eval_)) == (rec["train_bytes"], rec["eval_bytes"])
    licence = (catalog.ASSETS_DIR / catalog.LICENSE_FILE).read_text()
    assert licence == corpus.licence and "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in licence


def test_split_is_deterministic_disjoint_and_excludes_tests():
    corpus = shipped_corpus()
    files = corpus.files
    train, eval_ = corpus.split_files("train"), corpus.split_files("eval")
    assert set(train).isdisjoint(eval_) and sorted(train + eval_) == files
    assert 0.02 < len(eval_) / len(files) < 0.10
    assert all(catalog.split_of(f) == "eval" for f in eval_)
    excluded = catalog.EXCLUDED_DIRS
    assert not any(part in excluded for f in files for part in f.split("/")[:-1])
    assert "os.py" in files and files == sorted(files)


def test_split_rejects_unknown_split_name():
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        shipped_corpus().split_files("validation")
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        assets.builtin_tokens("pycode", "validation")


def test_corpus_archive_is_deterministic_and_round_trips(tmp_path):
    root = tmp_path / "stdlib"
    files = {"os.py": "import sys\n", "json/__init__.py": "x = 'é'\n", "test/t.py": "no", "a.txt": "no"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "LICENSE.txt").write_text("the licence")
    corpus = stdlib_corpus(root)
    assert corpus.files == ["json/__init__.py", "os.py"] and corpus.licence == "the licence"
    sha_a = write_archive(corpus, tmp_path / "a.tar.gz")
    sha_b = write_archive(stdlib_corpus(root), tmp_path / "b.tar.gz")
    assert sha_a == sha_b == catalog.sha256_file(tmp_path / "a.tar.gz")  # same files -> same bytes
    back = read_archive(tmp_path / "a.tar.gz")
    assert back.sources == corpus.sources and back.licence == "the licence" and back.source == corpus.source


def test_tokenizer_round_trips_python_source():
    tok = assets.builtin_tokenizer()
    assert tok.eos_token == tok.pad_token == catalog.EOS
    assert len(tok) == catalog.VOCAB_SIZE
    for text in [inspect.getsource(build), "def f(x):\n\tréturn x  # ünïcode ✓ \r\n\n    \n", "x=1"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) > 0
        assert tok.decode(ids) == text
    assert tok.encode(catalog.EOS, add_special_tokens=False) == [tok.eos_token_id]


def test_builtin_tokens_are_cached_and_end_files_with_eos(tmp_cache):
    tokens = assets.builtin_tokens("pycode", "eval")
    assert tokens.dtype == torch.long and tokens.dim() == 1
    eos = assets.builtin_tokenizer().eos_token_id
    assert int((tokens == eos).sum()) == MANIFEST["corpus"]["n_eval_files"] and tokens[-1] == eos
    assert len(tokens) == MANIFEST["corpus"]["eval_tokens"]  # the shipped tokenizer on the shipped corpus
    assert len(list((tmp_cache / "tokens").glob("pycode-eval-*.npy"))) == 1
    t0 = time.perf_counter()
    again = assets.builtin_tokens("pycode", "eval")
    assert time.perf_counter() - t0 < 1.0
    assert torch.equal(tokens, again)


def test_shipped_model_has_the_documented_held_out_ce_and_beats_unigram(tmp_cache, caplog):
    # The README's "held-out CE 3.49": the whole eval split in n_ctx-128 chunks, on any Python.
    ev = MANIFEST["eval"]
    with caplog.at_level(logging.WARNING, logger="e2e_sae.builtin"):
        model = load_language_model("builtin:pycode")
    assert not caplog.records, "the shipped assets must load without a warning"
    assert model.cfg.d_vocab == catalog.VOCAB_SIZE and model.cfg.n_layers == 3
    ce, targets = build.eval_ce(model, assets.builtin_tokens("pycode", "eval"), n_ctx=128)
    assert len(targets) == ev["predicted_tokens"] == 175_514
    assert ce == pytest.approx(ev["ce_loss"], abs=2e-3) and round(ce, 2) == 3.49
    assert ce < 0.6 * ev["unigram_ce_train"] and ce < 0.6 * ev["unigram_entropy_eval"]


def test_unknown_builtin_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown builtin model/corpus 'gpt9': valid names are pycode"):
        assets.builtin_model_path("gpt9")
    with pytest.raises(ValueError, match="valid names are pycode"):
        assets.builtin_tokens("gpt9")


def test_a_replaced_asset_is_an_error_naming_the_rebuild_command(tmp_path):
    shutil.copytree(catalog.ASSETS_DIR, tmp_path / "assets")
    assert assets.checked_manifest("pycode", need_model=True, directory=tmp_path / "assets") == MANIFEST
    (tmp_path / "assets" / catalog.CORPUS_FILE).write_bytes(b"not the corpus")
    with pytest.raises(RuntimeError, match=r"built-in corpus .* is not the one its manifest records: rebuild them"):
        assets.checked_manifest("pycode", need_model=False, directory=tmp_path / "assets")


def test_build_trains_a_loadable_model_on_a_given_corpus(tmp_path, monkeypatch):
    # A rebuild on a slice of the shipped corpus, 3 steps: the same code path as the shipped build.
    shipped = shipped_corpus()
    by_size = sorted(shipped.files, key=lambda f: len(shipped.sources[f]))
    keep = [f for f in by_size if catalog.split_of(f) == "train"][300:312] + [
        f for f in by_size if catalog.split_of(f) == "eval"
    ][15:17]
    corpus = Corpus({f: shipped.sources[f] for f in keep}, "a slice", "licence text")
    out = tmp_path / "build"
    man = build.build(out, steps=3, corpus=corpus)
    assert assets.checked_manifest("pycode", need_model=True, directory=out) == json.loads(json.dumps(man))
    assert man["corpus"]["n_eval_files"] == 2 and man["training"]["steps"] == 3
    assert read_archive(out / catalog.CORPUS_FILE).sources == corpus.sources
    assert (out / catalog.LICENSE_FILE).read_text() == "licence text"
    model = load_native_lm(out / catalog.MODEL_FILE)
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape[-1] == man["tokenizer"]["vocab_size"]


def test_lr_schedule_warms_up_then_decays_to_min():
    # the built-in model's training uses the library's schedule, scaled by its peak lr
    lrs = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_info_cli_prints_held_out_ce_and_entropy(capsys):
    build.main(["info"])
    out = capsys.readouterr().out
    assert "held-out CE 3.492" in out and "unigram" in out and "CPython 3.11.7 standard library (701 train files" in out
