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

from e2e_sae.architectures.spec import (
    ARCHITECTURE_KNOBS,
    PENALISED,
    Architecture,
    default_normalization,
    resolve_knobs,
)
from e2e_sae.errors import ConfigError
from e2e_sae.losses import MODE_PRESETS, LossConfig, check_kernel_supports
from e2e_sae.modes import MODES, Mode
from e2e_sae.run_dir import RunDir
from e2e_sae.strict import Strict

__all__ = ["MODES", "Mode", "LossConfig", "ConfigError", "RunConfig"]  # MODES, Mode, LossConfig: from losses


WeightProcessing = Literal["hooked_transformer", "none"]


class ModelConfig(Strict):
    """The frozen language model: an HF name (``gpt2``), ``builtin:pycode``, a local path, or a
    TL-native config dict (``native``) for a randomly initialised model (tests, benchmarks).

    ``weight_processing`` (HF models): ``hooked_transformer`` (the default) folds LayerNorm and
    centres the writing weights and the unembedding, as TransformerLens 3's
    ``HookedTransformer.from_pretrained`` did for the paper's SAEs; ``none`` keeps the raw HF
    weights. TL-native models are never processed (resolved to ``none``). See docs/weight_processing.md.
    """

    name: str | None = Field(
        default=None, description="an HF model name (gpt2), builtin:pycode, or a .pt file written by e2e_sae.lm"
    )
    native: dict[str, Any] | None = Field(
        default=None, description="a TransformerLens config dict for a randomly initialised TL-native model (tests)"
    )
    weight_processing: WeightProcessing | None = Field(
        default=None,
        description="hooked_transformer (fold LayerNorm, centre writing weights and unembedding, as the paper) or "
        "none (raw HF weights); default hooked_transformer for HF models, none for TL-native ones",
    )

    @property
    def is_native(self) -> bool:
        """A model of ours (``model.native``, ``builtin:``, a ``.pt``), not an HF checkpoint."""
        name = self.name or ""
        return self.native is not None or name.startswith("builtin:") or name.endswith(".pt")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.name is None) == (self.native is None):
            raise ValueError("set exactly one of model.name or model.native")
        if self.is_native:
            if self.weight_processing == "hooked_transformer":
                raise ValueError(
                    "model.weight_processing: hooked_transformer applies to HF models only; "
                    "TL-native models are used as they are, drop the field or set none"
                )
            self.weight_processing = "none"
        elif self.weight_processing is None:
            self.weight_processing = "hooked_transformer"
        return self


class DataSource(Strict):
    """One token source. ``name``: ``builtin:pycode``, an HF dataset name, a ``load_from_disk``
    directory, or a local .txt/.jsonl/.json/.parquet file (or a directory of them)."""

    name: str = Field(
        description="builtin:pycode, an HF dataset name, a load_from_disk directory, or a local "
        ".txt/.jsonl/.json/.parquet file or directory of them"
    )
    split: str = Field(default="train", description="the dataset split (builtin:pycode: train or eval)")
    column: str | None = Field(
        default=None, description="the column holding token ids or text; default input_ids if present, else text"
    )
    streaming: bool = Field(default=True, description="stream an HF hub dataset instead of downloading it whole")
    shuffle_buffer: int = Field(default=10_000, ge=1, description="streaming shuffle buffer, in samples")


class DataConfig(Strict):
    train: DataSource = Field(description="the training token stream")
    eval: DataSource = Field(
        description="the held-out evaluation tokens (the same source and split as train is refused)"
    )
    n_ctx: int = Field(gt=0, description="tokens per sample (context length)")
    tokenizer: str | None = Field(
        default=None, description="HF tokenizer name for raw text; default the model's tokenizer"
    )
    n_eval_samples: int = Field(
        default=64, gt=0, description="held-out samples of n_ctx tokens evaluated, the same for every run"
    )
    eval_batch_size: int = Field(default=16, gt=0, description="samples per evaluation forward pass")
    seed: int | None = Field(
        default=None, description="seed of the training-sample order; default the run's seed (a group shares one)"
    )


class SAEConfig(Strict):
    position: str = Field(description="the hook point the SAE is spliced into, e.g. blocks.6.hook_resid_pre")
    dict_size_to_input_ratio: float = Field(gt=0, description="dictionary elements per input dimension (n_dict / d_in)")
    pretrained_path: Path | None = Field(
        default=None,
        description="start from an SAE: a run's output_dir, a checkpoint, a sweep trial EXPERIMENT/TRIAL, the authors' "
        "or an SAELens file (docs/training.md); without sae.architecture, what the SAE is comes from the file",
    )
    ignore_weight_processing_mismatch: bool = Field(
        default=False,
        description="load a pretrained SAE trained under another model.weight_processing anyway (its inputs differ)",
    )
    architecture: Architecture = Field(
        default="relu",
        description="the SAE's activation and sparsity mechanism: relu (the paper's, Lp penalty), topk, batchtopk, "
        "jumprelu, matryoshka_batchtopk (docs/architectures.md)",
    )
    k: int | None = Field(
        default=None,
        gt=0,
        description="topk family: active dictionary elements per token (topk), or per token on average over the "
        "batch (batchtopk, matryoshka_batchtopk); below the dictionary size",
    )
    aux_loss_coeff: float | None = Field(
        default=None,
        ge=0,
        description="topk family: weight of the AuxK dead-latent loss (sae.auxk_form says which term it weighs); "
        "default 1/32, Gao et al.'s alpha, which they set for the gao form",
    )
    auxk_form: Literal["saelens", "gao"] | None = Field(
        default=None,
        description="topk family: whose AuxK: saelens (SAELens 6: dead set from the counts before the batch, raw "
        "pre-activations, min(n_dead/k_aux, 1) * error / d_in) or gao (Gao et al.'s code and dictionary_learning "
        "0.1.0: counts updated first, ReLU values, error / the residual's variance over the batch); default "
        "saelens (docs/architectures.md)",
    )
    dead_after_tokens: int | None = Field(
        default=None,
        gt=0,
        description="topk family: an element that fired on none of this many recent training tokens is dead and "
        "trained by AuxK, in tokens; default 10,000,000 (Gao et al.)",
    )
    topk_threshold_lr: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="batchtopk family: rate of the moving average that learns the evaluation threshold from each "
        "training batch's smallest kept activation; default 0.01 (SAELens)",
    )
    matryoshka_prefixes: list[float] | None = Field(
        default=None,
        description="matryoshka_batchtopk: the inner nested prefixes as strictly increasing fractions of the "
        "dictionary in (0, 1), e.g. [0.0625, 0.25]; each reconstructs on its own",
    )
    jumprelu_bandwidth: float | None = Field(
        default=None,
        gt=0,
        description="jumprelu: width epsilon of the straight-through estimator's kernel, in units of the "
        "(normalised) pre-activations; default 0.001 (Rajamanoharan et al.)",
    )
    jumprelu_init_threshold: float | None = Field(
        default=None,
        gt=0,
        description="jumprelu: every element's initial threshold, in units of the (normalised) pre-activations; "
        "default 0.001 (Rajamanoharan et al.)",
    )
    input_normalization: Literal["none", "mean_norm", "mean_squared_norm"] | None = Field(
        default=None,
        description="scale the SAE input by one constant estimated on the first training batch and recorded in "
        "the checkpoint: mean_norm (mean ||s a|| = sqrt(d_in), SAELens expected_average_only_in), "
        "mean_squared_norm (mean ||s a||^2 = d_in: sqrt(d_in) times dictionary_learning's scale, which makes it 1, "
        "so our per-element MSE equals its summed one), or none; default none for relu (the paper's), "
        "mean_squared_norm for the other architectures (docs/architectures.md)",
    )

    def resolve_architecture(self) -> None:
        """Fill the architecture's knob defaults and the input normalisation (RunConfig validation
        calls it, so its errors read ``sae.<knob>: ...``)."""
        for name, value in resolve_knobs(self.architecture, self.knobs()).items():
            setattr(self, name, value)
        if self.input_normalization is None:
            self.input_normalization = default_normalization(self.architecture)  # type: ignore[assignment]

    def knobs(self) -> dict[str, Any]:
        """The architecture's knobs (resolved by validation)."""
        return {name: getattr(self, name) for name in ARCHITECTURE_KNOBS}


class TrainConfig(Strict):
    n_samples: int = Field(gt=0, description="training samples of n_ctx tokens")
    batch_size: int = Field(default=8, gt=0, description="samples per micro-batch (one forward and backward)")
    effective_batch_size: int | None = Field(
        default=None, gt=0, description="samples per optimizer step (gradient accumulation); default batch_size"
    )
    lr: float = Field(default=5e-4, gt=0, description="peak Adam learning rate")
    warmup_samples: int = Field(default=0, ge=0, description="linear warm-up, in samples")
    min_lr_factor: float = Field(default=0.1, ge=0, le=1, description="the cosine schedule ends at lr * min_lr_factor")
    max_grad_norm: float | None = Field(default=10.0, gt=0, description="gradient-norm clip; null: no clipping")
    eval_every_n_samples: int | None = Field(
        default=None, gt=0, description="evaluate on the held-out tokens every so many samples; default at the end only"
    )
    checkpoint_every_n_samples: int | None = Field(
        default=None, gt=0, description="checkpoint every so many samples; default at the end only"
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="newest checkpoints kept on disk")
    act_frequency_n_tokens: int = Field(
        default=500_000, gt=0, description="tokens of the activation-frequency window that counts alive elements"
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    autocast_bf16: bool | None = Field(
        default=None, description="bf16 autocast for the language model; default on for CUDA (SAE stays fp32)"
    )
    sae_kernel: Literal["auto", "sparse", "dense", "autograd"] = Field(
        default="auto", description="the SAE's forward/backward implementation (docs/performance.md)"
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the autograd SAE path (slow first step); needs sae_kernel auto or autograd",
    )

    @model_validator(mode="after")
    def _accumulation(self) -> TrainConfig:
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
    def step_samples(self) -> int:
        """Samples per optimizer step: effective_batch_size, which validation fills from batch_size."""
        return self.batch_size if self.effective_batch_size is None else self.effective_batch_size

    @property
    def grad_accum_steps(self) -> int:
        return self.step_samples // self.batch_size

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run (at least one)."""
        return max(1, self.n_samples // self.step_samples)

    @property
    def trained_samples(self) -> int:
        """The samples the run trains on: whole optimizer steps, so ``n_samples`` rounded down to a
        multiple of the step's samples (one step at least). A fine-tune's length is a fraction of this,
        its parent's real length, never of the configured ``n_samples``."""
        return self.total_steps * self.step_samples

    @property
    def warmup_steps(self) -> int:
        return self.warmup_samples // self.step_samples


class FinetuneConfig(Strict):
    """Start from another SAE and train it on (usually) other losses: Karvonen's KL fine-tune of a local
    SAE. The run's own ``train`` section is the fine-tune's schedule (warm-up, cosine decay)."""

    parent: Path = Field(
        description="the SAE to start from: a run's output_dir (its last checkpoint), one of its checkpoint "
        "directories, a sweep trial EXPERIMENT/TRIAL, or any SAE sae.pretrained_path reads (the authors', SAELens)"
    )
    fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="train for this fraction of the samples the parent run trained on (whole steps: its "
        "train.n_samples rounded down to a multiple of its step's samples; fills train.n_samples; the parent must "
        "be a run's output_dir); default: train.n_samples as given",
    )
    optimizer_state: bool = Field(
        default=False,
        description="also start from the parent's Adam moments (a checkpoint of this library, same architecture); "
        "the learning rate and schedule are this run's",
    )
    copied_from: str | None = Field(
        default=None,
        description="where finetune.parent is a local copy of, recorded as the run's finetune_parent instead of the "
        "copy's path (a sweep's fine-tune: its parent trial's checkpoint in the experiment's storage); default: "
        "the checkpoint finetune.parent names",
    )


class WandbConfig(Strict):
    project: str | None = Field(default=None, description="W&B project")
    entity: str | None = Field(default=None, description="W&B entity (user or team)")
    mode: Literal["online", "offline", "disabled"] = Field(
        default="disabled", description="online | offline (synced later with wandb sync) | disabled"
    )
    group: str | None = Field(default=None, description="W&B group (a sweep sets its name)")
    name: str | None = Field(default=None, description="W&B run name; default the output_dir's name")
    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="a stable W&B run id, so a resumed run continues the same W&B run",
    )
    dir: Path | None = Field(
        default=None,
        description="where W&B keeps the run's local files; default the output_dir (a sweep's grouped member sets "
        "the trial's artifact directory, which Tune copies to the storage)",
    )


class RunConfig(Strict):
    mode: Mode = Field(description="the training mode: a preset of the loss terms (every coefficient overridable)")
    output_dir: Path = Field(
        description="where the run writes config, metrics and checkpoints (layout: e2e_sae/run_dir.py)"
    )
    seed: int = Field(default=0, description="seed of the SAE's initialisation (and the data order unless data.seed)")
    model: ModelConfig = Field(description="the frozen language model")
    data: DataConfig = Field(description="training and evaluation tokens")
    sae: SAEConfig = Field(description="the SAE and where it is spliced in")
    loss: LossConfig = Field(description="the loss terms; unset terms come from the mode's preset")
    train: TrainConfig = Field(description="optimisation, evaluation and checkpoint schedule")
    wandb: WandbConfig = Field(default=WandbConfig(), description="Weights & Biases logging")
    finetune: FinetuneConfig | None = Field(
        default=None, description="start from another SAE (a parent run) instead of a fresh one (docs/finetune.md)"
    )

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

    @model_validator(mode="before")
    @classmethod
    def _finetune_length(cls, raw: Any) -> Any:
        """``finetune.fraction``: train.n_samples from the parent run's (read from its config.yaml)."""
        finetune = raw.get("finetune") if isinstance(raw, dict) else None
        if not isinstance(finetune, dict) or finetune.get("fraction") is None:
            return raw
        train = dict(raw.get("train") or {})
        if train.get("n_samples") is not None:
            return raw  # a saved config holds both; they are checked against the parent before training
        fraction = finetune["fraction"]
        if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            return raw  # the field's own validation names it
        train["n_samples"] = finetune_samples(fraction, parent_run_samples(Path(finetune.get("parent") or "")))
        return {**raw, "train": train}

    @model_validator(mode="before")
    @classmethod
    def _pretrained_identity(cls, raw: Any) -> Any:
        """``sae.pretrained_path`` without ``sae.architecture``: what the SAE is comes from its file
        (:meth:`e2e_sae.sae_source.SAEFile.identity`): the architecture, the knobs and input normalisation
        the config leaves unset, and the sparsity term's shape (a TopK-family SAE drops ``loss.sparsity``;
        a penalised one keeps the config's coefficient, else its own). A config that sets
        ``sae.architecture`` says it on purpose and is checked against the file instead."""
        sae = raw.get("sae") if isinstance(raw, dict) else None
        if not isinstance(sae, dict) or sae.get("pretrained_path") is None or "architecture" in sae:
            return raw
        from e2e_sae.sae_source import read_identity

        identity = read_identity(sae["pretrained_path"])
        if identity is None:  # unreadable: the read before training says why, naming the field
            return raw
        sae, loss = dict(sae), dict(raw.get("loss") or {})
        for key, value in identity.items():
            section, name = key.split(".", 1)
            if section == "sae" and name != "position" and name not in sae and value is not None:
                sae[name] = value
        if identity["loss.sparsity"] is None:
            loss.pop("sparsity", None)
        else:
            loss.setdefault("sparsity", identity["loss.sparsity"])
        return {**raw, "sae": sae, "loss": loss}

    @model_validator(mode="after")
    def _one_starting_sae(self) -> RunConfig:
        if self.finetune is not None and self.sae.pretrained_path is not None:
            raise ValueError(
                "finetune.parent: the run starts from finetune.parent, so sae.pretrained_path has no say; drop "
                "sae.pretrained_path"
            )
        return self

    @model_validator(mode="after")
    def _kernel_supports_p_norm(self) -> RunConfig:
        check_kernel_supports(self.train.sae_kernel, self.p_norm)
        arch = self.sae.architecture
        if arch != "relu" and self.train.sae_kernel in ("sparse", "dense"):
            raise ValueError(
                f"train.sae_kernel: {self.train.sae_kernel!r} implements the relu SAE only (sae.architecture is "
                f"{arch}); use auto or autograd"
            )
        return self

    @model_validator(mode="after")
    def _architecture_knobs(self) -> RunConfig:
        self.sae.resolve_architecture()
        return self

    @model_validator(mode="after")
    def _sparsity_matches_architecture(self) -> RunConfig:
        arch, sparsity = self.sae.architecture, self.loss.sparsity
        if arch in PENALISED and sparsity is None:
            raise ValueError(f"loss.sparsity: {arch} needs its coefficient; set loss.sparsity.coeff")
        if arch not in PENALISED and sparsity is not None:
            raise ValueError(
                f"loss.sparsity: {arch} sets L0 by sae.k and has no sparsity coefficient; drop loss.sparsity "
                "(on the command line: --set loss.sparsity=null)"
            )
        if sparsity is not None and sparsity.target_l0 is not None and arch != "jumprelu":
            raise ValueError("loss.sparsity.target_l0: a jumprelu knob; drop it or set sae.architecture=jumprelu")
        if arch == "jumprelu" and sparsity is not None and sparsity.p_norm != 1.0:
            raise ValueError("loss.sparsity.p_norm: jumprelu penalises L0, not an Lp norm; drop p_norm")
        return self

    @property
    def p_norm(self) -> float:
        """p of the relu SAE's Lp penalty (1 where the loss has none)."""
        return self.loss.sparsity.p_norm if self.loss.sparsity is not None else 1.0

    @model_validator(mode="after")
    def _has_reconstruction_term(self) -> RunConfig:
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


def finetune_samples(fraction: float, parent_samples: int) -> int:
    """A fine-tune's length: ``fraction`` of its parent's training samples, at least one."""
    return max(1, round(fraction * parent_samples))


def longer_than_parent(train: TrainConfig, parent_samples: int) -> str | None:
    """What is wrong with a fine-tune of ``train`` whose parent trained on ``parent_samples``, or None:
    the run trains (whole steps, :attr:`TrainConfig.trained_samples`) longer than its parent did. The
    one rule for a run (:mod:`e2e_sae.finetune`) and a sweep's planned children."""
    if train.trained_samples <= parent_samples:
        return None
    trained, steps = train.trained_samples, f" ({train.total_steps} step(s) of {train.step_samples})"
    steps = "" if trained == train.n_samples else steps
    return f"a fine-tune of {trained} samples{steps} is longer than its parent's {parent_samples}"


def parent_run_samples(parent: Path) -> int:
    """The samples the run in ``parent`` trains on (from its config.yaml: whole steps, not the configured
    ``train.n_samples``), for ``finetune.fraction``."""
    config = RunDir(parent).config
    if not config.is_file():
        raise ValueError(
            f"finetune.fraction: {parent} is not a run's output_dir (no {config.name}); give finetune.parent a "
            "run directory, or set train.n_samples instead"
        )
    try:
        return TrainConfig.model_validate(yaml.safe_load(config.read_text())["train"]).trained_samples
    except (yaml.YAMLError, KeyError, TypeError, ValidationError):
        raise ValueError(
            f"finetune.fraction: {config} holds no valid train section; set train.n_samples instead"
        ) from None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in a nested mapping, creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def flatten_dotted(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{train: {n_samples: 5}}`` and ``{train.n_samples: 5}`` both become ``{"train.n_samples": 5}``.
    A ``native`` model spec stays one value: it describes one model, and overriding part of it
    would splice two models' settings together."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not key.endswith("native"):
            out.update(flatten_dotted(v, key + "."))
        else:
            out[key] = v
    return out


def add_set_argument(parser) -> None:
    """The ``--set KEY=VALUE`` option every command line of the project takes (see parse_overrides)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, value parsed as YAML (repeatable)",
    )


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.n_samples=2000")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({reason}); quote it or fix it") from None
    return out


# pydantic's bound errors -> the comparison and its ctx key: "got -1; give a value >= 0" names the fix.
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le")}
_BOUNDS["less_than"] = ("<", "lt")


def _shown(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field.path: message``, the message saying what to give."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against the documented config"
        elif e["type"] in _BOUNDS and "ctx" in e:
            op, key = _BOUNDS[e["type"]]
            msg = f"got {_shown(e['input'])}; give a value {op} {_shown(e['ctx'][key])}"
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


def parse_yaml_mapping(text: str, source: str | Path, what: str = "run config") -> dict[str, Any]:
    """``text`` as a YAML mapping (``yaml.safe_load``); a syntax error or a non-mapping is a one-line
    ConfigError ``source:line:column: ...`` (as compilers print it, so editors can jump there)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error_line(err, source, what)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level")
    return raw


def _yaml_error_line(err: yaml.YAMLError, source: str | Path, what: str) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(source)
    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None:
        reason += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"{where}: invalid YAML in this {what} file: {reason}; fix the syntax there"


def read_yaml_mapping(path: str | Path, what: str = "run config") -> dict[str, Any]:
    """A YAML file's top-level mapping (``yaml.safe_load``), or a one-line ConfigError (missing
    file, syntax error with line and column, not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; pass the path of a {what} YAML")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} file {path} cannot be read ({err}); pass a readable UTF-8 YAML file") from None
    return parse_yaml_mapping(text, path, what)


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    return run_config_from_dict(read_yaml_mapping(path), overrides)
