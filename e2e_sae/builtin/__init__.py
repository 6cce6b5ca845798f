"""The built-in offline model and corpus, ``builtin:pycode``.

Why it exists: the quickstart and the tests must run with no network and no GPU, yet an SAE is only
worth studying on a language model that has learned something. So the package ships a small
TL-native transformer trained on a corpus every Python install already has: the interpreter's own
standard library sources.

- Corpus: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, skipping any directory
  named in :data:`EXCLUDED_DIRS` (installed packages, and the test suites, which are mostly
  generated fixtures and would leak near-duplicates across the split).
- Split: by file, deterministically, from sha256 of the path relative to the stdlib root (5% eval).
  Neither the tokenizer nor the model ever sees an eval file.
- Tokenizer: byte-level BPE (vocab 4096) with one special token ``<|endoftext|>`` separating files.
- Model: 3 layers, d_model 128, n_ctx 128, trained with AdamW on the train split (~8 min, 2 cores).

The shipped files in ``builtin_assets/`` are used when their manifest's stdlib fingerprint matches
this interpreter; otherwise we log a WARNING and build (or reuse) a matching copy in the cache dir,
because an eval split drawn from a different stdlib would no longer be held out.

Modules: :mod:`~e2e_sae.builtin.catalog` (names, corpus, split, file layout; imports nothing else of
the package), :mod:`~e2e_sae.builtin.assets` (the files for this interpreter: shipped or cache build)
and :mod:`~e2e_sae.builtin.build` (tokenizer, LM training, evaluation).

CLI: ``python -m e2e_sae.builtin build [--out DIR] [--steps N]`` and ``python -m e2e_sae.builtin info``.
"""
