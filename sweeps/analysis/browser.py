"""The feature browser: static HTML pages (``index.html`` and one page per SAE) that open from disk.

No server, no network: CSS is inline, plots are PNG files beside the pages. Pages are rendered by
jinja2 with autoescaping on (templates in ``sweeps/analysis/templates/``), so every token's text, however
it reads (``<script>``, quotes, ``&``), shows as text; every token is shown by one function,
:func:`e2e_sae.token_text.token_strings` (byte tokens as ``<0xE2>``, whitespace as ``␣ ↵ ⇥``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from sweeps.analysis.tables import (
    GEOMETRY_PNG,
    MATCH_THRESHOLD,
    NO_SEED_LINE,
    PAPER_NORM_RATIO,
    PAPER_WITHIN_LOCAL_MINUS,
    SAME_SEED_LINE,
    seed_lines,
    summary_lines,
)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sweeps.analysis", "templates"),
        autoescape=True,  # every template: token text is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _features(sae: dict[str, Any], ctx, res) -> list[dict[str, Any]]:
    """Per sampled element: its density, top contexts (token text + activation) and logit effects."""
    from e2e_sae.token_text import token_strings

    stats, tokens = res.stats, ctx.tokens
    n_seq, n_ctx = tokens.shape
    windows = []  # (element, rank) -> list of (token id, activation, is the top token)
    ids: set[int] = set()
    for f in res.sampled:
        per = []
        for j in range(stats.top_values.shape[0]):
            value = float(stats.top_values[j, f])
            if value <= 0:
                break
            seq, pos = divmod(int(stats.top_index[j, f]), n_ctx)
            toks = []
            for w in range(stats.left + 1 + stats.right):
                p = pos - stats.left + w
                if 0 <= p < n_ctx:
                    tid = int(tokens[seq, p])
                    ids.add(tid)
                    toks.append((tid, float(stats.top_windows[j, w, f]), p == pos))
            per.append({"value": value, "seq": seq, "pos": pos, "tokens": toks})
        windows.append(per)
    effect = res.logit_effect
    if effect is not None:
        for key in ("boost_ids", "suppress_ids"):
            ids.update(int(i) for i in effect[key].flatten())
    text = token_strings(ctx.tokenizer, sorted(ids))
    kind_of = {f: kind for kind, fs in res.samples.items() for f in fs}
    out = []
    for row, (f, per) in enumerate(zip(res.sampled, windows, strict=True)):
        top = per[0]["value"] if per else 1.0
        contexts = [
            {
                "value": c["value"],
                "where": f"sequence {c['seq']}, position {c['pos']}",
                "tokens": [
                    {"text": text[t], "act": a, "alpha": max(0.0, a) / top, "top": is_top}
                    for t, a, is_top in c["tokens"]
                ],
            }
            for c in per
        ]  # fmt: skip
        logits = None
        if effect is not None:
            logits = {
                name: [
                    {"text": text[int(i)], "value": float(v)}
                    for i, v in zip(effect[f"{name}_ids"][row], effect[f"{name}_values"][row], strict=True)
                ]
                for name in ("boost", "suppress")
            }
        out.append(
            {
                "index": f,
                "kind": kind_of[f],
                "count": int(stats.fire_counts[f]),
                "density": float(stats.density[f]),
                "max": top if per else 0.0,
                "contexts": contexts,
                "logits": logits,
            }
        )
    return out


def write_html(out: Path, doc: dict[str, Any], results: list) -> Path:
    env = _env()
    common = {"doc": doc, "geometry_png": GEOMETRY_PNG, "match_threshold": MATCH_THRESHOLD}
    for sae, (_p, _tr, ctx, res) in zip(doc["saes"], results, strict=True):
        page = env.get_template("sae.html.j2").render(
            **common, sae=sae, features=_features(sae, ctx, res), density_png=f"density_{sae['trial_id']}.png"
        )
        (out / sae["page"]).write_text(page)
    index = env.get_template("index.html.j2").render(
        **common,
        summary=summary_lines(doc),
        seed_lines=seed_lines(doc),
        no_seed_line=None if doc["has_seed_baseline"] else NO_SEED_LINE,
        same_seed_line=SAME_SEED_LINE,
        paper_within=PAPER_WITHIN_LOCAL_MINUS,
        paper_norm={m: " / ".join(f"{v:.2f}" for v in r.values()) for m, r in PAPER_NORM_RATIO.items()},
    )
    (out / "index.html").write_text(index)
    return out / "index.html"
