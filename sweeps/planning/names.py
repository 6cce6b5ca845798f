"""Every name a sweep gives: trials, curves, grouped Tune trials and retries. The one place that spells them.

- A **trial** is one SAE training run: ``e2e_L1_r8_s2_seed0`` (mode, layer or hook, dictionary
  ratio, ``s`` sparsity coefficient to 4 significant digits, seed). It names the trial's directory
  under the experiment (a single Tune trial) or its part of a grouped one. An architecture other
  than relu follows the mode, and the topk family's knob is ``k``: ``e2e_batchtopk_L1_r8_k32_seed0``.
- A **curve** is the trials of one (mode, architecture, layer, ratio, seed) that differ only in the
  sparsity knob: ``e2e_L1_r8_seed0``. The target search places coefficients along each curve.
- A **group** is up to ``group_size`` trials trained as ONE Tune trial on one clean forward pass:
  ``e2e_L1_group3`` in a grid (the plan's group index), ``e2e_L1_r8_seed0_s0.5_2`` in a target search
  (the curve and its members' coefficients).
- A **retry** of a target search's start whose trials errored: ``<name>_retry<n>``, a directory of its own.
- A **fine-tune** of a trial (a sweep's ``finetune`` stage): ``<parent>_<stage>_<mode>_<pct>pct``
  (``local_L1_r8_s2_seed0_kl_e2e_5pct``); its frontier is the series ``local -> e2e, 5%``.

Names are safe as file names: anything but letters, digits and ``_ . + -`` becomes ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _where(layer: int | None, hook: Any) -> Any:
    return layer if layer is not None else hook


def _series(mode: Any, architecture: Any) -> str:
    return f"{mode}" if architecture in (None, "relu") else f"{mode}_{architecture}"


def trial_name(
    mode: Any,
    layer: int | None,
    hook: Any,
    ratio: Any,
    coeff: Any,
    seed: Any,
    architecture: Any = None,
    k: Any = None,
    target_l0: Any = None,
) -> str:
    """``e2e_L1_r8_s2_seed0``; ``e2e_batchtopk_L1_r8_k32_seed0`` for the topk family (its knob ``k``);
    ``e2e_jumprelu_L1_r8_s1_t20_seed0`` for a jumprelu trial with a target L0."""
    knob = f"k{k}" if k is not None else f"s{float(coeff):.4g}"
    knob += f"_t{float(target_l0):.4g}" if target_l0 is not None else ""
    return safe_name(f"{_series(mode, architecture)}_L{_where(layer, hook)}_r{float(ratio):g}_{knob}_seed{seed}")


def curve_name(mode: Any, layer: int | None, hook: Any, ratio: Any, seed: Any, architecture: Any = None) -> str:
    """``e2e_L1_r8_seed0``: a trial's name without its sparsity knob."""
    return safe_name(f"{_series(mode, architecture)}_L{_where(layer, hook)}_r{float(ratio or 0):g}_seed{seed}")


def unique_names(names: Sequence[str]) -> list[str]:
    """The names made unique: names that coincide (coefficients equal to 4 significant digits, a value
    repeated on an axis) get their index in the plan appended."""
    counts = {n: names.count(n) for n in names}
    return [f"{n}_{i}" if counts[n] > 1 else n for i, n in enumerate(names)]


def grid_group_name(mode: Any, layer: int | None, hook: Any, index: int, architecture: Any = None) -> str:
    """``e2e_L1_group3``: the grid's grouped Tune trial ``index`` (its place among the plan's groups)."""
    return safe_name(f"{_series(mode, architecture)}_L{_where(layer, hook)}_group{index}")


def search_group_name(curve: str, values: Sequence[float], retry: int = 0, knob: str = "coeff") -> str:
    """``e2e_L1_r8_seed0_s0.5_2`` (``..._k16_32`` placing k): a target search's grouped Tune trial
    (unique: the search never proposes values of a curve within 1% of each other, and 4 significant
    digits tell apart any two that are 1% apart)."""
    tag = "k" if knob == "k" else "s"
    return safe_name(f"{curve}_{tag}" + "_".join(f"{v:.4g}" for v in values) + (f"_retry{retry}" if retry else ""))


def retry_name(name: str, retry: int) -> str:
    """``<name>_retry<n>``; the name itself for a first attempt (``retry`` 0)."""
    return f"{name}_retry{retry}" if retry else name


def finetune_name(parent: str, stage: str, mode: Any, fraction: float) -> str:
    """``local_L1_r8_s2_seed0_kl_e2e_5pct``: stage ``kl``'s fine-tune of ``parent`` with ``mode``'s
    losses for ``fraction`` of the parent's samples."""
    return safe_name(f"{parent}_{stage}_{mode}_{fraction * 100:g}pct")


def finetune_series(parent_mode: Any, mode: Any, fraction: float) -> str:
    """``local -> e2e, 5%``: the frontier a stage's fine-tunes of one parent mode draw (the report
    compares series within one architecture, as it does modes)."""
    return f"{parent_mode} -> {mode}, {fraction * 100:g}%"
