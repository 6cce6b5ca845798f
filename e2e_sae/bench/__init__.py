"""Training throughput of one run config: ``python -m e2e_sae.bench [CONFIG] [--set KEY=VALUE ...]``.

Modules: ``common`` (shared by both sides), ``throughput`` (our step), ``reference`` (the comparison
with the authors' package) and ``reference_worker`` (their side, run in the reference venv only);
``saelens`` and ``saelens_worker`` (the sae-lens venv for the architecture-equality tests).

Times the library's own training step -- exactly the one ``e2e_sae.train`` runs: clean pass, spliced
pass + loss, backward, then clip + Adam + schedule, plus the loop's activation-frequency and L0
bookkeeping -- on seeded random tokens, and reports tokens/s, ms per step by phase, peak memory,
model FLOPs and, where the device's peak is known, the model FLOP utilisation (MFU).

Other modes (see docs/performance.md):
  --setup-reference DIR   build a venv with the authors' ``e2e_sae`` package in DIR
  --setup-saelens DIR     build a venv with sae-lens in DIR (tests/test_saelens.py)
  --reference DIR         ours vs theirs on the same config, weights and tokens, alternating
  --compare-bf16          CE-loss increase of a trained SAE with and without bf16 autocast (CUDA)
  --pack 1,2,4            makespan of N concurrent benchmark processes on one device
"""
