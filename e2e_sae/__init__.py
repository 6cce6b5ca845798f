"""End-to-end sparse dictionary learning (Braun et al., 2024) on TransformerLens 4 models.

    from e2e_sae import load_run_config, train
    metrics = train(load_run_config("e2e_sae/configs/quickstart_e2e.yaml"))
"""

from e2e_sae.config import ConfigError, RunConfig, load_run_config, run_config_from_dict
from e2e_sae.sae import SAE, load_sae
from e2e_sae.spliced import SplicedModel
from e2e_sae.train import TrainingDiverged, train

__all__ = [
    "SAE", "ConfigError", "RunConfig", "SplicedModel", "TrainingDiverged",
    "load_run_config", "load_sae", "run_config_from_dict", "train",
]
