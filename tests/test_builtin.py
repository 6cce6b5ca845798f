"""The built-in offline model and corpus (builtin:pycode): split, tokenizer, token cache, shipped
model quality, and the fallback when the shipped assets do not match this interpreter."""

import inspect
import logging
import time

import pytest
import torch

from e2e_sae.builtin import assets, build, catalog
from e2e_sae.lm import load_language_model
from e2e_sae.native_lm import load_native_lm
from e2e_sae.optim import lr_factor


def shipped_matches() -> bool:
    man = catalog.read_manifest(catalog.ASSETS_DIR)
    return man is not None and man["stdlib_fingerprint"] == catalog.stdlib_fingerprint()


needs_shipped = pytest.mark.skipif(
    not shipped_matches(), reason="shipped builtin assets were built for another stdlib (would trigger a 10-min build)"
)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_SAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_split_is_deterministic_disjoint_and_excludes_tests():
    files = catalog.corpus_files()
    train, eval_ = catalog.split_files("train", files), catalog.split_files("eval", files)
    assert set(train).isdisjoint(eval_) and sorted(train + eval_) == files
    assert 0.02 < len(eval_) / len(files) < 0.10
    assert catalog.split_files("eval") == eval_  # same answer when recomputed from disk
    assert all(catalog.split_of(f) == "eval" for f in eval_)
    excluded = catalog.EXCLUDED_DIRS
    assert not any(part in excluded for f in files for part in f.split("/")[:-1])
    assert "os.py" in files and files == sorted(files)


def test_split_rejects_unknown_split_name():
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        catalog.split_files("validation")


@needs_shipped
def test_tokenizer_round_trips_python_source():
    tok = assets.builtin_tokenizer()
    assert tok.eos_token == tok.pad_token == catalog.EOS
    assert len(tok) == catalog.VOCAB_SIZE
    for text in [inspect.getsource(build), "def f(x):\n\tréturn x  # ünïcode ✓ \r\n\n    \n", "x=1"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) > 0
        assert tok.decode(ids) == text
    assert tok.encode(catalog.EOS, add_special_tokens=False) == [tok.eos_token_id]


@needs_shipped
def test_builtin_tokens_are_cached_and_end_files_with_eos(tmp_cache):
    tokens = assets.builtin_tokens("pycode", "eval")
    assert tokens.dtype == torch.long and tokens.dim() == 1
    eos = assets.builtin_tokenizer().eos_token_id
    assert int((tokens == eos).sum()) == len(catalog.split_files("eval")) and tokens[-1] == eos
    assert len(list((tmp_cache / "tokens").glob("pycode-eval-*.npy"))) == 1
    t0 = time.perf_counter()
    again = assets.builtin_tokens("pycode", "eval")
    assert time.perf_counter() - t0 < 1.0
    assert torch.equal(tokens, again)


@needs_shipped
def test_shipped_model_beats_unigram_baseline_on_held_out_code(tmp_cache, caplog):
    man = catalog.read_manifest(catalog.ASSETS_DIR)
    with caplog.at_level(logging.WARNING, logger="e2e_sae.builtin"):
        model = load_language_model("builtin:pycode")
    assert not caplog.records, "matching shipped assets must load without a fallback warning"
    assert model.cfg.d_vocab == catalog.VOCAB_SIZE and model.cfg.n_layers == 3
    chunks = assets.builtin_tokens("pycode", "eval")[: 128 * 1300].view(-1, 128)
    spread = chunks[torch.linspace(0, len(chunks) - 1, 24).long()].reshape(-1)  # across all eval files
    ce, _ = build.eval_ce(model, spread, n_ctx=128)
    assert ce < 0.6 * man["eval"]["unigram_ce_train"]
    assert ce < 0.6 * man["eval"]["unigram_entropy_eval"]


def test_unknown_builtin_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown builtin model/corpus 'gpt9': valid names are pycode"):
        assets.builtin_model_path("gpt9")
    with pytest.raises(ValueError, match="valid names are pycode"):
        assets.builtin_tokens("gpt9")


def test_fingerprint_mismatch_warns_then_builds_and_reuses_cache(tmp_cache, monkeypatch, caplog):
    # A different stdlib, simulated by a small subset of this one: its fingerprint differs from the
    # shipped manifest's, and it keeps the fallback build to a second or two.
    files = catalog.corpus_files()
    by_size = lambda fs: sorted(fs, key=lambda f: (catalog.stdlib_root() / f).stat().st_size)  # noqa: E731
    train = by_size(catalog.split_files("train", files))[300:312]
    eval_ = by_size(catalog.split_files("eval", files))[15:17]
    monkeypatch.setattr(catalog, "corpus_files", lambda root=None: sorted(train + eval_))
    monkeypatch.setattr(catalog, "DEFAULT_STEPS", 3)

    with caplog.at_level(logging.WARNING, logger="e2e_sae.builtin"):
        path = assets.builtin_model_path()
    assert path == tmp_cache / "builtin" / "pycode" / "model.pt" and path.is_file()
    assert any("not using the shipped assets" in r.message and "Building" in r.message for r in caplog.records)
    man = catalog.read_manifest(path.parent)
    assert man["stdlib_fingerprint"] == catalog.stdlib_fingerprint() and man["training"]["steps"] == 3
    assert man["corpus"]["n_eval_files"] == 2
    model = load_native_lm(path)
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape[-1] == man["tokenizer"]["vocab_size"]

    caplog.clear()
    mtime = path.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="e2e_sae.builtin"):
        assert assets.builtin_model_path() == path
        tok = assets.builtin_tokenizer()
    assert path.stat().st_mtime_ns == mtime, "a matching cache build must be reused, not rebuilt"
    assert caplog.records and all("matching cache build" in r.message for r in caplog.records)
    assert tok.decode(tok.encode("import os\n")) == "import os\n"


def test_lr_schedule_warms_up_then_decays_to_min():
    # the built-in model's training uses the library's schedule, scaled by its peak lr
    lrs = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


@needs_shipped
def test_info_cli_prints_held_out_ce_and_entropy(capsys):
    build.main(["info"])
    out = capsys.readouterr().out
    assert "held-out CE" in out and "unigram" in out and "matches this interpreter" in out
