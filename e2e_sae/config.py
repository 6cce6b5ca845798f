"""Typed run configuration: YAML in, validated up front, before any model or data is loaded.

A run config fixes one SAE training run. ``mode`` is a preset for the loss terms (the paper's three
training modes); every coefficient stays overridable. ``--set a.b=value`` overrides are applied to the
raw mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from e2e_sae.losses import MODE_PRESETS, MODES, LossConfig, Mode, check_kernel_supports
from e2e_sae.strict import Strict

__all__ = ["MODES", "Mode", "LossConfig", "ConfigError", "RunConfig"]  # MODES, Mode, LossConfig: from losses


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line naming the field and the fix."""


class ModelConfig(Strict):
    """The frozen language model: an HF name (``gpt2``), ``builtin:pycode``, a local path, or a
    TL-native config dict (``native``) for a randomly initialised model (tests, benchmarks)."""

    name: str | None = None
    native: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if (self.name is None) == (self.native is None):
            raise ValueError("set exactly one of model.name or model.native")
        return self


class DataSource(Strict):
    """One token source. ``name``: ``builtin:pycode``, an HF dataset name, a ``load_from_disk``
    directory, or a local .txt/.jsonl/.json/.parquet file (or a directory of them)."""

    name: str
    split: str = "train"
    column: str | None = None  # default: "input_ids" if present, else "text"
    streaming: bool = True  # HF hub datasets only
    shuffle_buffer: int = Field(default=10_000, ge=1)  # streaming shuffle buffer


class DataConfig(Strict):
    train: DataSource
    eval: DataSource
    n_ctx: int = Field(gt=0)
    tokenizer: str | None = None  # HF tokenizer name for raw text; default: the model's tokenizer
    n_eval_samples: int = Field(default=64, gt=0)  # held-out sequences of n_ctx tokens, fixed per run
    eval_batch_size: int = Field(default=16, gt=0)
    seed: int | None = None  # order of the training samples; default: the run's seed (a group shares one)


class SAEConfig(Strict):
    position: str  # a hook point of the model, e.g. blocks.6.hook_resid_pre
    dict_size_to_input_ratio: float = Field(gt=0)
    pretrained_path: Path | None = None  # start from an SAE checkpoint (ours or the authors' e2e_sae)


class TrainConfig(Strict):
    n_samples: int = Field(gt=0)  # training sequences of n_ctx tokens
    batch_size: int = Field(default=8, gt=0)
    effective_batch_size: int | None = Field(default=None, gt=0)  # default: batch_size
    lr: float = Field(default=5e-4, gt=0)
    warmup_samples: int = Field(default=0, ge=0)
    min_lr_factor: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: float | None = Field(default=10.0, gt=0)
    eval_every_n_samples: int | None = Field(default=None, gt=0)  # default: only at the end
    checkpoint_every_n_samples: int | None = Field(default=None, gt=0)  # default: only at the end
    keep_checkpoints: int = Field(default=2, ge=1)
    act_frequency_n_tokens: int = Field(default=500_000, gt=0)  # window for alive elements
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    autocast_bf16: bool | None = None  # bf16 autocast for the LM; default: on for CUDA
    # SAE forward/backward: auto | sparse | dense | autograd (e2e_sae/sae_kernels.py; docs/performance.md)
    sae_kernel: Literal["auto", "sparse", "dense", "autograd"] = "auto"
    compile: bool = False  # torch.compile the autograd SAE path (slow first step); needs sae_kernel auto|autograd

    @model_validator(mode="after")
    def _accumulation(self) -> "TrainConfig":
        if self.effective_batch_size is None:
            self.effective_batch_size = self.batch_size
        if self.compile and self.sae_kernel in ("sparse", "dense"):
            raise ValueError(
                f"train.compile: compiles the autograd SAE path, not the {self.sae_kernel!r} kernel; "
                "set train.sae_kernel to auto or autograd, or drop train.compile"
            )
        if self.effective_batch_size % self.batch_size:
            raise ValueError(
                f"train.effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                f"train.batch_size ({self.batch_size})"
            )
        return self

    @property
    def grad_accum_steps(self) -> int:
        return self.effective_batch_size // self.batch_size  # type: ignore[operator]

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run (at least one)."""
        return max(1, self.n_samples // self.effective_batch_size)  # type: ignore[operator]

    @property
    def warmup_steps(self) -> int:
        return self.warmup_samples // self.effective_batch_size  # type: ignore[operator]


class WandbConfig(Strict):
    project: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "disabled"
    group: str | None = None
    name: str | None = None


class RunConfig(Strict):
    mode: Mode
    output_dir: Path
    seed: int = 0
    model: ModelConfig
    data: DataConfig
    sae: SAEConfig
    loss: LossConfig
    train: TrainConfig
    wandb: WandbConfig = WandbConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_mode_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("mode") not in MODE_PRESETS:
            return raw
        loss = dict(raw.get("loss") or {})
        for term, default in MODE_PRESETS[raw["mode"]].items():
            if term not in loss:
                loss[term] = default
        return {**raw, "loss": loss}

    @model_validator(mode="after")
    def _kernel_supports_p_norm(self) -> "RunConfig":
        check_kernel_supports(self.train.sae_kernel, self.loss.sparsity.p_norm)
        return self

    @model_validator(mode="after")
    def _has_reconstruction_term(self) -> "RunConfig":
        if not self.loss.active():
            raise ValueError("loss: every reconstruction term is off; set loss.out_to_in, logits_kl or in_to_orig")
        return self

    @property
    def data_seed(self) -> int:
        """The seed of the training-sample order: ``data.seed``, else the run's ``seed``."""
        return self.seed if self.data.seed is None else self.data.seed

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---- loading -------------------------------------------------------------------------------------


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in a nested mapping, creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.n_samples=2000")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against the documented config"
        lines.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}")
    return "; ".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``raw`` with dotted-key ``overrides`` set (the caller's mapping is untouched)."""
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return raw


def run_config_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    raw = apply_overrides(raw, overrides)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def read_yaml_mapping(path: str | Path, what: str = "run config") -> dict[str, Any]:
    """A YAML file's top-level mapping (``yaml.safe_load``), or a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; pass the path of a {what} YAML")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return raw


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    return run_config_from_dict(read_yaml_mapping(path), overrides)

