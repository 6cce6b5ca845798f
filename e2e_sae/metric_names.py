"""The names of the metrics a run reports, defined once for the library, the sweeps and the reports.

Definitions: docs/metrics.md. This module imports nothing, so a report can read results without
loading the training stack.
"""

# What one evaluation on the held-out tokens measures (e2e_sae.metrics.evaluate, plus the
# activation-frequency window's alive count).
EVAL_METRICS = (
    "l0",
    "alive_dict_elements",
    "ce_loss_increase",
    "ce_loss_original",
    "ce_loss_spliced",
    "ce_loss_zero_ablated",
    "ce_loss_score",
    "kl",
    "mse",
    "explained_variance",
    "explained_variance_per_token_mean",
    "top1_agreement",
)
# What those numbers were measured on: they do not compare across different values of these.
EVAL_CONTEXT = ("alive_window_tokens", "eval_tokens", "n_ctx")
# Where the run stood when it reported.
PROGRESS = ("step", "loss", "lr", "final")
# The columns of `python -m sweeps status` and a finished sweep's table.
SWEEP_STATUS = ("l0", "alive_dict_elements", "ce_loss_increase", "n_samples")
# The one-line summary a finished run prints.
HEADLINE = ("l0", "alive_dict_elements", "ce_loss_increase", "ce_loss_score", "explained_variance", "kl")
