"""Upload a written sweep report to Weights & Biases: its frontier plots and its tables, one run."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Literal

from e2e_sae.hooks import hook_slug
from sweeps.reporting.report import X_METRICS, Y_METRIC, hook_views


def _cell(v: str) -> Any:
    """A CSV cell back to a number where it is one ('' -> None)."""
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


FRONTIER_COLUMNS: list[str | int] = [
    "hook", "architecture", "mode", "x_metric", "trial_id", "sparsity_coeff", "k", "l0", "alive_dict_elements",
    Y_METRIC,
]  # fmt: skip
MATCHED_COLUMNS: list[str | int] = [
    "hook", "architecture", "mode", Y_METRIC, "l0", "alive_dict_elements", "l0_clipped", "alive_clipped",
    "l0_ratio_to_local", "alive_ratio_to_local", "l0_ratio_bound", "alive_ratio_bound",
]  # fmt: skip


def log_report_to_wandb(
    report_dir: str | Path, project: str, wandb_group: str, entity: str | None = None, mode: str = "offline"
) -> Path | None:
    """Upload a written report (its PNGs and tables) as one W&B run "<sweep>-report" in the W&B group
    ``wandb_group`` (the sweep's).
    Credentials come from the environment as usual (``wandb login`` / WANDB_API_KEY); nothing is
    passed here. Returns the run's local directory, or None with ``mode="disabled"`` (a no-op)."""
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"W&B mode {mode!r} is not one of online, offline, disabled")
    if mode == "disabled":
        return None
    upload: Literal["online", "offline"] = "online" if mode == "online" else "offline"
    import wandb

    report_dir = Path(report_dir)
    doc = json.loads((report_dir / "pareto.json").read_text())
    with (report_dir / "trials.csv").open(newline="") as f:
        header, *rows = list(csv.reader(f))
    # Local run files beside the report (not in whatever directory the command ran from); WANDB_DIR wins.
    run = wandb.init(
        project=project,
        group=wandb_group,
        entity=entity,
        name=f"{doc['sweep']}-report",
        dir=os.environ.get("WANDB_DIR") or str(report_dir),
        job_type="report",
        mode=upload,
        config={k: doc[k] for k in ("sweep", "model", "eval_tokens", "n_ctx", "trial_counts")},
    )
    try:
        images = {
            f"frontier/{hook}": wandb.Image(str(report_dir / f"frontier_{hook_slug(hook)}.png"), caption=hook)
            for hook in doc["hooks"]
        }
        trial_columns: list[str | int] = list(header)
        run.log(
            {
                **images,
                "trials": wandb.Table(
                    columns=trial_columns, data=[[_cell(v) for v in r] for r in rows], allow_mixed_types=True
                ),
                "frontier": wandb.Table(columns=FRONTIER_COLUMNS, data=_frontier_rows(doc), allow_mixed_types=True),
                "matched": wandb.Table(columns=MATCHED_COLUMNS, data=_matched_rows(doc), allow_mixed_types=True),
            }
        )
        return Path(run.dir).parent
    finally:
        run.finish()


def _frontier_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """The ``frontier`` table: every frontier point of every hook, mode and x metric."""
    return [
        [
            hook,
            p.get("architecture"),
            mode_name,
            x,
            p["trial_id"],
            p["sparsity_coeff"],
            p.get("k"),
            p["metrics"].get("l0"),
            p["metrics"].get("alive_dict_elements"),
            p["metrics"].get(Y_METRIC),
        ]
        for hook, h in doc["hooks"].items()
        for _, view in hook_views(h)
        for mode_name, m in view["modes"].items()
        for x, front in m["frontiers"].items()
        for p in front
    ]


def _matched_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """The ``matched`` table: per hook and mode the readings at y*, whether each was clipped, the ratios
    to local and which of them are bounds (None: an estimate; docs/report.md)."""
    rows = []
    for hook, h in doc["hooks"].items():
        for arch, view in hook_views(h):
            rows += _matched_view_rows(hook, arch or (doc.get("architectures") or [None])[0], view["matched"])
    return rows


def _matched_view_rows(hook: str, arch: str | None, matched: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for mode_name, m in matched["modes"].items():
        ratio = matched["ratios"].get(f"{mode_name}/local", {})
        rows.append(
            [
                hook,
                arch,
                mode_name,
                matched[Y_METRIC],
                *(m[x]["value"] if x in m else None for x in X_METRICS),
                *(m[x]["clipped"] if x in m else None for x in X_METRICS),
                *(1.0 if mode_name == "local" else ratio.get(x) for x in X_METRICS),
                *((ratio.get("bounds") or {}).get(x) for x in X_METRICS),
            ]
        )
    return rows
