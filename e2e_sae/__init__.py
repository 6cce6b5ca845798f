"""End-to-end sparse dictionary learning (Braun et al., 2024) on TransformerLens 4 models.

    from e2e_sae import load_run_config, train_sae
    metrics = train_sae(load_run_config("e2e_sae/configs/quickstart_e2e.yaml"))

Names are imported lazily, so ``python -m e2e_sae.train`` does not import its own module twice.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ConfigError": "e2e_sae.config",
    "RunConfig": "e2e_sae.config",
    "load_run_config": "e2e_sae.config",
    "run_config_from_dict": "e2e_sae.config",
    "SAE": "e2e_sae.sae",
    "load_sae": "e2e_sae.sae",
    "SplicedModel": "e2e_sae.spliced",
    "TrainingDiverged": "e2e_sae.loop",
    "train_group": "e2e_sae.group",
    "member_configs": "e2e_sae.group",
    "GroupSpec": "e2e_sae.group",
}
__all__ = [*_EXPORTS, "train_sae"]


def __getattr__(name: str) -> Any:
    if name == "train_sae":
        return import_module("e2e_sae.train").train
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'e2e_sae' has no attribute {name!r}")
