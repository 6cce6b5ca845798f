"""Which SAE a path names: the one lookup behind ``python -m e2e_sae.export``, ``evaluate --sae``,
``finetune.parent`` and ``sae.pretrained_path``, and the one reader of an SAE file's bytes.

A path may name, in the order tried:

- a file: one of our ``checkpoint.pt``, the authors' ``saes.state_dict()`` file, a plain SAE state dict;
- a checkpoint directory (it holds ``checkpoint.pt``) or an SAELens directory (``cfg.json`` +
  ``sae_weights.safetensors``);
- a run's ``output_dir``: its newest checkpoint (layout: :mod:`e2e_sae.run_dir`);
- a sweep trial's directory, ``EXPERIMENT/TRIAL``: its newest checkpoint as Ray Tune persisted it;
- a grouped sweep trial's member by its name, ``EXPERIMENT/MEMBER``, though no such directory exists.

The sweep layout is a contract with ``sweeps/running`` (``grouped_trial.py`` stages a group's
checkpoint, Tune persists it as ``checkpoint_NNNNNN``; ``tests/test_sae_source.py`` checks it against
them)::

    EXPERIMENT/<trial dir>/checkpoint_NNNNNN/checkpoint.pt            a trial of one SAE
    EXPERIMENT/<group dir>/checkpoint_NNNNNN/<member>/checkpoint.pt   a member of a grouped trial
    (metrics.json, the run's final metrics, beside checkpoint.pt in the last one)

A group directory's name is not its members' (a target search names it after its curve and
coefficients: ``e2e_L2_r8_seed0_s2+e2e_L2_r8_seed1_s2``), while ``sweeps status`` and ``report`` list
members by their own names; so a member is found by its name among the experiment's group
directories, from the files alone (this package imports neither Ray nor ``sweeps``). A group
directory itself names no one SAE: the error lists its members.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from e2e_sae.architectures import saved_architecture
from e2e_sae.architectures.spec import ARCHITECTURE_KNOBS, PENALISED
from e2e_sae.checkpoint import latest_checkpoint
from e2e_sae.errors import ConfigError
from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE, RunDir
from e2e_sae.saelens_format import SAELENS_CFG_FILE, SAELENS_WEIGHTS_FILE, read_saelens_dir

SWEEP_CHECKPOINT_GLOB = "checkpoint_*"  # Tune's name for a checkpoint it persisted in a trial directory
WHAT_NAMES_AN_SAE = (
    "a run's output_dir, a checkpoint directory or file, a sweep trial (EXPERIMENT/TRIAL, as sweeps status "
    "lists it) or an SAELens directory"
)


def find_sae(path: str | Path, field: str) -> Path:
    """The SAE file or directory (checkpoint or SAELens) that ``path`` names (module docstring);
    a ConfigError naming ``field`` (the config field or CLI option that passed it) and the fix."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        return _in_directory(path, field)
    member = _grouped_member(path, field)
    if member is None:
        raise ConfigError(f"{field}: {path} does not exist; pass {WHAT_NAMES_AN_SAE}")
    return member


def _in_directory(path: Path, field: str) -> Path:
    if (path / CHECKPOINT_FILE).is_file() or _is_saelens_dir(path):
        return path
    run = RunDir(path)
    if run.checkpoints.is_dir() or run.config.is_file():
        last = latest_checkpoint(path)
        if last is None:
            raise ConfigError(f"{field}: the run in {path} has no checkpoint yet; use it once it has finished")
        return last
    own = sweep_checkpoints(path)
    if own:
        return own[-1]
    members, at = members_of_checkpoint(path), path  # one checkpoint of a grouped trial: members inside
    if not members:  # a grouped trial's directory: members in its checkpoint_*/, named EXPERIMENT/MEMBER
        members, at = _members_in_checkpoints(path), path.parent
    if members:
        raise ConfigError(
            f"{field}: {path} is a grouped sweep trial of {len(members)} SAEs; pass one of them: "
            + ", ".join(str(at / m) for m in members)
        )
    raise ConfigError(f"{field}: {path} holds no SAE checkpoint; pass {WHAT_NAMES_AN_SAE}")


def sweep_checkpoints(trial_dir: Path, member: str = "") -> list[Path]:
    """A sweep trial's persisted checkpoints holding ``checkpoint.pt``, oldest first: ``checkpoint_NNNNNN/``,
    or a grouped member's ``checkpoint_NNNNNN/<member>/``."""
    found = [p / member for p in trial_dir.glob(SWEEP_CHECKPOINT_GLOB) if p.is_dir()]
    return sorted(p for p in found if (p / CHECKPOINT_FILE).is_file())


def members_of_checkpoint(checkpoint: Path) -> list[str]:
    """The members whose checkpoints a grouped trial's checkpoint directory holds."""
    return sorted(p.name for p in checkpoint.iterdir() if (p / CHECKPOINT_FILE).is_file())


def _members_in_checkpoints(path: Path) -> list[str]:
    checkpoints = sorted(p for p in path.glob(SWEEP_CHECKPOINT_GLOB) if p.is_dir())
    return sorted({m for c in checkpoints for m in members_of_checkpoint(c)})


def _grouped_member(path: Path, field: str) -> Path | None:
    """``EXPERIMENT/MEMBER``: the member's newest checkpoint in the one group directory that trained it
    to its end (or holds it at all); None when no group directory holds it."""
    experiment = path.parent
    if not experiment.is_dir():
        return None
    pattern = f"*/{SWEEP_CHECKPOINT_GLOB}/{glob.escape(path.name)}/{CHECKPOINT_FILE}"
    groups = sorted({hit.parent.parent.parent for hit in experiment.glob(pattern)})
    newest = [sweep_checkpoints(g, path.name)[-1] for g in groups]
    if len(newest) > 1:  # a retried group: the attempt that finished
        newest = [c for c in newest if (c / METRICS_FILE).is_file()] or newest
    if len(newest) > 1:
        raise ConfigError(
            f"{field}: {path.name} was trained in {len(newest)} grouped trials of {experiment}; pass one checkpoint: "
            + ", ".join(map(str, newest))
        )
    return newest[0] if newest else None


def _is_saelens_dir(path: Path) -> bool:
    """An SAELens directory, or half of one (its reader then says what is missing)."""
    return (path / SAELENS_CFG_FILE).is_file() or (path / SAELENS_WEIGHTS_FILE).is_file()


def load_sae_blob(file: Path) -> Any:
    """``torch.load(file, weights_only=True)``, or a ValueError of one line saying the file is no SAE
    checkpoint (a YAML file, an empty or truncated one: torch's own error is a page long)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "not an SAE file"
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:100]
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise ValueError(
            f"{file} is not an SAE checkpoint torch can read ({reason}); pass {WHAT_NAMES_AN_SAE}"
        ) from None


def read_identity(path: str | Path) -> dict[str, Any] | None:
    """What the SAE ``path`` names is (:meth:`SAEFile.identity`), or None where it cannot be read
    (whoever reads it for training then says why, in one line)."""
    try:
        return read_sae_file(find_sae(path, "sae.pretrained_path")).identity()
    except ValueError:  # ConfigError too
        return None


def hook_to_module_key(hook_name: str) -> str:
    """The reference library keys its SAEs by hook name with '.' replaced by '-'."""
    return hook_name.replace(".", "-")


@dataclass
class SAEFile:
    """An SAE's weights and the model weight processing it was trained under (None: not recorded)."""

    state: dict[str, Tensor]
    weight_processing: str | None
    architecture: str = "relu"  # sae.architecture it was trained as (relu: the authors' files, older ones)
    input_normalization: str = "none"  # sae.input_normalization it was trained with
    # knobs that define the SAE itself and must match the run's (an SAELens TopK SAE's k); ours: none
    knobs: dict[str, Any] = field(default_factory=dict)
    position: str | None = None  # the hook it was trained at, where the file says (SAELens's hook_name)
    config: dict[str, Any] | None = None  # the run config it was trained under (our checkpoints only)

    def identity(self) -> dict[str, Any]:
        """The run-config fields (dotted) that say what this SAE is: its architecture with its knobs
        (the others None), input normalisation and hook where the file records it (our checkpoints'
        config, SAELens's cfg.json; the authors' files are relu SAEs), and its sparsity term's shape:
        the checkpoint's ``loss.sparsity`` for a penalised architecture (a placeholder coefficient
        where the file has none), none for the TopK family."""
        saved = self.config or {}
        saved_sae = saved.get("sae") or {}
        fixed: dict[str, Any] = {f"sae.{knob}": saved_sae.get(knob) for knob in ARCHITECTURE_KNOBS}
        fixed |= {f"sae.{knob}": value for knob, value in self.knobs.items()}
        fixed["sae.architecture"] = self.architecture
        fixed["sae.input_normalization"] = self.input_normalization
        sparsity = (saved.get("loss") or {}).get("sparsity")
        penalised = self.architecture in PENALISED
        fixed["loss.sparsity"] = (sparsity if isinstance(sparsity, dict) else {"coeff": 1.0}) if penalised else None
        if self.position is not None:
            fixed["sae.position"] = self.position
        return fixed


def read_sae_file(path: str | Path, position: str | None = None) -> SAEFile:
    """SAE weights from one of our checkpoints or a file saved by the authors' ``e2e_sae``.

    Accepts: a plain SAE state dict (processing unknown); our training checkpoint
    (``{"sae": state_dict, "config": ...}``: its ``model.weight_processing``, ``none`` for checkpoints
    written before the field existed, when HF models were never processed); or the reference's
    ``saes.state_dict()`` whose keys are ``blocks-6-hook_resid_pre.encoder.0.weight`` (pick the SAE
    by ``position``; a file with a single SAE needs none), trained on HookedTransformer-processed
    models (``hooked_transformer``). A directory: one of our checkpoint directories, or an SAELens
    SAE (``cfg.json`` + ``sae_weights.safetensors``, :mod:`e2e_sae.saelens_format`).
    """
    if Path(path).is_dir():
        if not (Path(path) / CHECKPOINT_FILE).is_file():
            imported = read_saelens_dir(path, position)
            return SAEFile(
                imported.state,
                imported.weight_processing,
                imported.architecture,
                "none",
                imported.knobs,
                imported.position,
            )
        path = Path(path) / CHECKPOINT_FILE
    blob = load_sae_blob(Path(path))
    processing, architecture, normalization, config, trained_at = None, "relu", "none", None, None
    if isinstance(blob, dict) and isinstance(blob.get("sae"), dict):
        config = blob.get("config") if isinstance(blob.get("config"), dict) else None
        if config is not None:
            processing = (config.get("model") or {}).get("weight_processing") or "none"
            normalization = (config.get("sae") or {}).get("input_normalization") or "none"
            trained_at = (config.get("sae") or {}).get("position")
        architecture = saved_architecture(config)
        blob = blob["sae"]
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not an SAE state dict")
    names = {"encoder.0.weight", "encoder.0.bias", "decoder.weight", "decoder.bias"}
    if names <= set(blob):
        # the architecture's parameters and buffers and the input scale come along (none for relu)
        state = {k: v for k, v in blob.items() if k in names or k.startswith("arch.") or k == "input_scale"}
        return SAEFile(state, processing, architecture, normalization, position=trained_at, config=config)
    prefixes = sorted({k.rsplit(".", 2)[0] for k in blob if k.endswith(("encoder.0.weight",))})
    prefixes = [p.removesuffix(".encoder") for p in prefixes]
    if position is not None:
        wanted = hook_to_module_key(position)
        prefixes = [p for p in prefixes if p.split(".")[-1] == wanted]
    if len(prefixes) != 1:
        raise ValueError(
            f"{path}: cannot pick one SAE for position {position!r}; SAEs in the file: "
            f"{sorted({k.split('.')[0] for k in blob})}"
        )
    prefix = prefixes[0] + "."
    return SAEFile({k[len(prefix) :]: v for k, v in blob.items() if k.startswith(prefix)}, "hooked_transformer")
