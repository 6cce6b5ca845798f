"""The three training modes of the paper, named once (what each switches on: e2e_sae.losses.MODE_PRESETS).

Imports nothing, so the sweep reports can order and validate modes without loading torch.
"""

from typing import Literal, get_args

Mode = Literal["local", "e2e", "e2e+ds"]
MODES: tuple[Mode, ...] = get_args(Mode)


def in_mode_order(modes) -> list[str]:
    """``modes`` (any iterable of names) in the paper's order, unknown names after them, sorted."""
    given = set(modes)
    return [m for m in MODES if m in given] + sorted(str(m) for m in given - set(MODES))
