"""The built-in offline model and corpus, ``builtin:pycode``.

Why it exists: the quickstart and the tests must run with no network and no GPU, yet an SAE is only
worth studying on a language model that has learned something. So the package ships a small
TL-native transformer and the corpus it was trained on: CPython 3.11.7's standard-library sources
(PSF licence, shipped beside them), the same on every Python that runs the package.

- Corpus (``builtin_assets/corpus.tar.gz``, :mod:`~e2e_sae.builtin.corpus`): every ``.py`` file of that
  standard library, skipping any directory named in ``catalog.EXCLUDED_DIRS`` (installed packages,
  and the test suites, which are mostly generated fixtures and would leak near-duplicates across the split).
- Split: by file, deterministically, from sha256 of the path relative to the stdlib root (5% eval).
  Neither the tokenizer nor the model ever sees an eval file.
- Tokenizer: byte-level BPE (vocab 4096) with one special token ``<|endoftext|>`` separating files.
- Model: 3 layers, d_model 128, n_ctx 128, trained with AdamW on the train split (~8 min, 2 cores).

The manifest records the sha256 of the corpus and tokenizer the model was built from; loading checks
them, so a replaced file is an error that names the rebuild command, never a silently different model.

Modules: :mod:`~e2e_sae.builtin.catalog` (names, split rule, file layout; imports nothing else of the
package), :mod:`~e2e_sae.builtin.corpus` (the archive), :mod:`~e2e_sae.builtin.assets` (the checked
shipped files, token streams) and :mod:`~e2e_sae.builtin.build` (tokenizer, LM training, evaluation).

CLI: ``python -m e2e_sae.builtin build --out DIR [--steps N] [--stdlib [ROOT]]`` and
``python -m e2e_sae.builtin info``.
"""
