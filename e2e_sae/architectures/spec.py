"""Which config knobs belong to which architecture, their defaults, and the checks that need no
model: plain data and functions, so the config module can use them before anything loads."""

from __future__ import annotations

from typing import Any, Literal

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk")
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka_batchtopk")
BATCHTOPK_FAMILY = ("batchtopk", "matryoshka_batchtopk")
# Architectures whose loss has a sparsity term weighted by loss.sparsity.coeff.
PENALISED = ("relu", "jumprelu")

# sae.<knob>: (the architectures it belongs to, its default there; None: required)
KNOBS: dict[str, tuple[tuple[str, ...], Any]] = {
    "k": (TOPK_FAMILY, None),
    # Gao et al.'s alpha, which belongs to their normalised form (auxk_form gao); kept as the saelens form's
    # default too, so runs from before auxk_form existed are unchanged (SAELens's own default is 1)
    "aux_loss_coeff": (TOPK_FAMILY, 1 / 32),
    "auxk_form": (TOPK_FAMILY, "saelens"),  # SAELens's AuxK (the definition before the switch existed)
    "dead_after_tokens": (TOPK_FAMILY, 10_000_000),  # Gao et al.: no activation in 10M tokens
    "topk_threshold_lr": (BATCHTOPK_FAMILY, 0.01),  # SAELens
    "matryoshka_prefixes": (("matryoshka_batchtopk",), None),
    "jumprelu_bandwidth": (("jumprelu",), 0.001),  # Rajamanoharan et al.
    "jumprelu_init_threshold": (("jumprelu",), 0.001),  # Rajamanoharan et al.
}


def default_normalization(architecture: str) -> str:
    """``none`` for relu (the paper's, bit for bit today's); ``mean_squared_norm`` (E||s x||^2 = d_in)
    for the others, whose absolute-scale knobs (JumpReLU's threshold and bandwidth) then have one unit."""
    return "none" if architecture == "relu" else "mean_squared_norm"


def resolve_knobs(architecture: str, values: dict[str, Any]) -> dict[str, Any]:
    """The knobs with the architecture's defaults filled in; ValueError (one line, field and fix)
    for a knob of another architecture or a missing required one."""
    out = dict(values)
    for knob, (owners, default) in KNOBS.items():
        if architecture not in owners:
            if values.get(knob) is not None:
                raise ValueError(
                    f"sae.{knob}: a knob of {', '.join(owners)}, but sae.architecture is {architecture}; "
                    f"drop sae.{knob} or set sae.architecture"
                )
            continue
        if values.get(knob) is None:
            if default is None:
                raise ValueError(f"sae.{knob}: {architecture} needs it; set sae.{knob}")
            out[knob] = default
    prefixes = out.get("matryoshka_prefixes")
    if prefixes is not None:
        if not prefixes or any(not 0 < f < 1 for f in prefixes) or sorted(set(prefixes)) != list(prefixes):
            raise ValueError(
                f"sae.matryoshka_prefixes: {prefixes} must be strictly increasing fractions of the dictionary "
                "in (0, 1), e.g. [0.0625, 0.25] (the whole dictionary is the last prefix)"
            )
    return out


def prefix_sizes(fractions: list[float], n_dict: int) -> list[int]:
    """The inner prefixes' sizes in latents (``round(f * n_dict)``); ValueError when two coincide or
    one is empty or the whole dictionary (the dictionary is too small for the fractions)."""
    sizes = [round(f * n_dict) for f in fractions]
    if sizes[0] < 1 or sizes[-1] >= n_dict or len(set(sizes)) != len(sizes):
        raise ValueError(
            f"sae.matryoshka_prefixes: {fractions} of {n_dict} latents gives prefix sizes {sizes}; each must be "
            f"at least 1, below {n_dict} and distinct: use fewer or coarser fractions or a larger dictionary"
        )
    return sizes


def check_dictionary(architecture: str, knobs: dict[str, Any], n_dict: int) -> None:
    """Knobs against the dictionary size (known once d_in is): ValueError naming the field and fix."""
    k = knobs.get("k")
    if architecture in TOPK_FAMILY and k is not None and k >= n_dict:
        raise ValueError(f"sae.k: {k} must be below the dictionary size {n_dict}; lower sae.k")
    if architecture == "matryoshka_batchtopk":
        prefix_sizes(knobs["matryoshka_prefixes"], n_dict)


# The run config's sae.<knob> fields that belong to one architecture or another (e2e_sae.config).
ARCHITECTURE_KNOBS = (
    "k",
    "aux_loss_coeff",
    "auxk_form",
    "dead_after_tokens",
    "topk_threshold_lr",
    "matryoshka_prefixes",
    "jumprelu_bandwidth",
    "jumprelu_init_threshold",
)
