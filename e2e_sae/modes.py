"""The three training modes of the paper, named once (what each switches on: e2e_sae.losses.MODE_PRESETS).

Imports nothing, so the sweep reports can order and validate modes without loading torch.
"""

import re
from typing import Literal, get_args

Mode = Literal["local", "e2e", "e2e+ds"]
MODES: tuple[Mode, ...] = get_args(Mode)


def in_mode_order(modes) -> list[str]:
    """``modes`` (any iterable of names) in the paper's order, other names (a sweep's fine-tune series,
    ``local -> e2e, 5%``) after them, sorted with their numbers as numbers (5% before 10%)."""
    given = set(modes)
    return [m for m in MODES if m in given] + sorted((str(m) for m in given - set(MODES)), key=_natural)


def _natural(name: str) -> list[tuple[int, float | str]]:
    return [(0, float(p)) if i % 2 else (1, p) for i, p in enumerate(re.split(r"(\d+(?:\.\d+)?)", name))]
