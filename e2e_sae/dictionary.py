"""What a trained dictionary contains: densities, top-activating contexts, output effects, geometry.

The model-side half of ``python -m sweeps analyse`` (which knows the sweep; this module knows one
trained SAE). :func:`dictionary_pass` makes ONE pass over the held-out eval tokens and collects,
for every dictionary element at once: how often it fires, its ``k`` highest activations with the
activation values in a window of tokens around each (a running top-k over batch x position, merged
batch by batch with ``torch.topk``), and the reconstruction norm ratio ``||a_hat|| / ||a||`` at
positions > 0 (the paper's Section 3.4: e2e SAEs reconstruct with a much smaller norm). The
geometry functions are pure tensor functions over decoder directions ([d_in, n_dict] columns), and
:func:`direct_logit_effect` reads a direction through the model's final norm and unembedding.
Exact definitions: docs/analysis.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from e2e_sae.checkpoint import load_checkpoint
from e2e_sae.config import RunConfig, run_config_from_dict
from e2e_sae.sae import SAE, build_sae
from e2e_sae.spliced import SplicedModel

DENSE_FREQUENCY = 0.1  # an element firing on more than this fraction of tokens is counted as dense


@dataclass
class TrainedSAE:
    """A finished run's SAE and the resolved run config it was trained under (from its checkpoint)."""

    cfg: RunConfig
    sae: SAE
    n_samples: int
    checkpoint: Path


def load_trained_sae(checkpoint: str | Path) -> TrainedSAE:
    """One of our training checkpoints (directory or ``checkpoint.pt``): the SAE and its run config.
    The config comes from the checkpoint itself, so the SAE is analysed on the model, hook and eval
    set it was trained and scored with."""
    path = Path(checkpoint)
    blob = load_checkpoint(path)
    if not isinstance(blob.get("config"), dict) or not isinstance(blob.get("sae"), dict):
        raise ValueError(f"{path}: not a training checkpoint of e2e_sae (no config or SAE state)")
    cfg = run_config_from_dict(blob["config"])
    n_dict, d_in = blob["sae"]["encoder.0.weight"].shape
    sae = build_sae(cfg, d_in, n_dict)  # the run's architecture and normalisation, from its config
    sae.load_state_dict(blob["sae"])
    return TrainedSAE(cfg, sae.eval(), int(blob.get("n_samples", 0)), path)


def initial_directions(cfg: RunConfig, d_in: int) -> Tensor | None:
    """The unit decoder directions the run started from: its :func:`e2e_sae.assemble.seeded_sae`
    (the global RNG is left as it was). None for a run that started from another SAE. Short runs
    move directions little from it, and SAEs of the same seed share it, so it is the reference for
    reading any cross-SAE similarity."""
    from e2e_sae.assemble import seeded_sae

    if cfg.sae.pretrained_path is not None or cfg.finetune is not None:
        return None
    with torch.random.fork_rng(devices=[]):
        return seeded_sae(cfg, d_in).dict_elements.detach()


@dataclass
class DictionaryStats:
    """What one pass over the eval tokens found (tensors on the CPU).

    ``top_values[j, f]`` is element f's j-th highest activation, at flat token index
    ``top_index[j, f]`` (sequence ``// n_ctx``, position ``% n_ctx`` of the eval tokens);
    ``top_windows[j, :, f]`` are f's activations on the tokens ``left`` before to ``right`` after it
    (0 past the sequence's ends). Elements that fired on fewer than ``k`` tokens have trailing
    zeros in ``top_values``."""

    n_tokens: int
    n_ctx: int
    fire_counts: Tensor  # [n_dict] int64: tokens on which the element fired (c > 0)
    top_values: Tensor  # [k, n_dict]
    top_index: Tensor  # [k, n_dict] int64
    top_windows: Tensor  # [k, left + 1 + right, n_dict]
    left: int
    right: int
    norm_ratio: float  # mean over tokens at positions > 0 of ||a_hat|| / ||a||
    norm_ratio_tokens: int

    @property
    def density(self) -> Tensor:
        """Firing frequency per element: fraction of eval tokens with c > 0."""
        return self.fire_counts.double() / self.n_tokens

    @property
    def l0(self) -> float:
        """Mean number of active elements per token on these tokens (the run's ``l0`` on the same tokens)."""
        return float(self.fire_counts.sum()) / self.n_tokens

    @property
    def n_dead(self) -> int:
        return int((self.fire_counts == 0).sum())

    @property
    def n_dense(self) -> int:
        return int((self.density > DENSE_FREQUENCY).sum())


def _merge_top(
    kept: tuple[Tensor, Tensor, Tensor], new: tuple[Tensor, Tensor, Tensor], k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest of two (values, index, windows) sets, per element (dim 0 = rank)."""
    values, index, windows = (torch.cat(pair) for pair in zip(kept, new, strict=True))
    values, sel = values.topk(min(k, len(values)), dim=0)
    index = index.gather(0, sel)
    windows = windows.gather(0, sel[:, None, :].expand(-1, windows.shape[1], -1))
    return values, index, windows


@torch.no_grad()
def dictionary_pass(
    spliced: SplicedModel, tokens: Tensor, batch_size: int, k: int = 10, left: int = 16, right: int = 4
) -> DictionaryStats:
    """One pass over ``tokens`` ``[n_seq, n_ctx]``: firing counts, each element's top-``k`` activations
    with windows of activations around them, and the norm ratio at positions > 0 (see the class)."""
    sae = spliced.sae
    n, device = sae.n_dict_elements, next(sae.parameters()).device
    n_seq, n_ctx = tokens.shape
    width = left + 1 + right
    fire = torch.zeros(n, dtype=torch.long, device=device)
    kept = (
        torch.empty(0, n, device=device),
        torch.empty(0, n, dtype=torch.long, device=device),
        torch.empty(0, width, n, device=device),
    )
    ratio_sum, ratio_n = 0.0, 0
    offsets = torch.arange(-left, right + 1, device=device)[None, :, None]
    for start in range(0, n_seq, batch_size):
        batch = tokens[start : start + batch_size].to(device)
        acts = spliced.clean_forward(batch, need_logits=False).acts.float()  # [B, T, d_in]
        acts_hat, c = sae(acts)
        fire += (c > 0).sum((0, 1))
        norm_a, norm_hat = acts[:, 1:].norm(dim=-1), acts_hat[:, 1:].norm(dim=-1)
        ok = norm_a > 0
        ratio_sum += float((norm_hat[ok] / norm_a[ok]).double().sum())
        ratio_n += int(ok.sum())
        b_size = batch.shape[0]
        values, flat = c.reshape(b_size * n_ctx, n).topk(min(k, b_size * n_ctx), dim=0)  # [kk, n]
        seq, pos = flat // n_ctx, flat % n_ctx
        at = pos[:, None, :] + offsets  # [kk, width, n]: positions left .. right of each top token
        inside = (at >= 0) & (at < n_ctx)  # 0 past the sequence's ends (no padded copy of c)
        rows = (seq[:, None, :] * n_ctx + at.clamp(0, n_ctx - 1)).reshape(-1, n)
        windows = c.reshape(-1, n).gather(0, rows).reshape(len(values), width, n) * inside
        kept = _merge_top(kept, (values, flat + start * n_ctx, windows), k)
    return DictionaryStats(
        n_tokens=n_seq * n_ctx,
        n_ctx=n_ctx,
        fire_counts=fire.cpu(),
        top_values=kept[0].cpu(),
        top_index=kept[1].cpu(),
        top_windows=kept[2].cpu(),
        left=left,
        right=right,
        norm_ratio=ratio_sum / ratio_n if ratio_n else float("nan"),
        norm_ratio_tokens=ratio_n,
    )


def sample_features(fire_counts: Tensor, n_per_kind: int, seed: int = 0) -> dict[str, list[int]]:
    """Elements to show: the ``n_per_kind`` most frequent, a seeded random sample of the alive ones,
    and the rarest alive (each list in that order, no element twice; dead elements never)."""
    counts = fire_counts.long()
    alive = torch.nonzero(counts > 0).flatten()
    order = alive[torch.argsort(counts[alive], descending=True, stable=True)]
    frequent = order[:n_per_kind].tolist()
    rarest = [f for f in order.flip(0).tolist() if f not in frequent][:n_per_kind]
    rest = torch.tensor([f for f in order.tolist() if f not in frequent and f not in rarest], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    random = sorted(rest[torch.randperm(len(rest), generator=g)[:n_per_kind]].tolist())
    return {"most frequent": frequent, "random": random, "rarest alive": rarest}


# ---- output effects -------------------------------------------------------------------------------


def effective_unembedding(model: Any) -> tuple[Tensor, bool]:
    """``(W [d_model, vocab], centre)``: the map from a residual-stream direction to its direct effect
    on the logits, linearised through the final norm. The final LayerNorm subtracts the mean and
    scales by a positive factor, then multiplies by its weight: so a direction ``d`` moves the logits
    along ``centre(d) * w_ln @ W_U`` (RMS norm: no centring). Works for TL-native models and HF models
    booted through TransformerBridge, with or without HookedTransformer weight processing (which
    folds the norm's weight into ``W_U``: ``ln_final.w`` is then absent or ones)."""
    w_u = model.W_U.detach().float()
    norm_type = str(getattr(model.cfg, "normalization_type", None) or "")
    ln = getattr(model, "ln_final", None)
    w_ln = getattr(ln, "w", None) if ln is not None and not norm_type.endswith("Pre") else None
    if isinstance(w_ln, Tensor) and w_ln.shape == (w_u.shape[0],):
        w_u = w_ln.detach().float()[:, None] * w_u
    return w_u, norm_type.startswith("LN")


@torch.no_grad()
def direct_logit_effect(model: Any, directions: Tensor, k: int = 10) -> dict[str, Tensor]:
    """Per direction (columns of ``directions`` [d_model, m]), the ``k`` output tokens it boosts most
    and suppresses most through the unembedding (:func:`effective_unembedding`), with the effects.
    Returns ``boost_ids``, ``boost_values``, ``suppress_ids``, ``suppress_values``, each [m, k]."""
    w_u, centre = effective_unembedding(model)
    d = directions.float().to(w_u.device)
    if centre:
        d = d - d.mean(0, keepdim=True)
    effect = d.T @ w_u  # [m, vocab]
    k = min(k, effect.shape[1])
    boost, suppress = effect.topk(k, dim=1), (-effect).topk(k, dim=1)
    return {
        "boost_ids": boost.indices.cpu(),
        "boost_values": boost.values.cpu(),
        "suppress_ids": suppress.indices.cpu(),
        "suppress_values": (-suppress.values).cpu(),
    }


# ---- geometry (pure) ----------------------------------------------------------------------------


def max_cos_sim_within(directions: Tensor, chunk: int = 4096) -> Tensor:
    """For each column of ``directions`` [d_in, n], its largest cosine similarity to any other column
    (the paper's within-SAE nearest-neighbour similarity). Chunked: memory ``chunk x n``."""
    d = F.normalize(directions.float(), dim=0)
    n = d.shape[1]
    if n < 2:
        raise ValueError("max_cos_sim_within needs at least two directions")
    out = torch.empty(n)
    for s in range(0, n, chunk):
        sims = d[:, s : s + chunk].T @ d  # [c, n]
        idx = torch.arange(s, min(s + chunk, n))
        sims[idx - s, idx] = -float("inf")  # not itself
        out[s : s + chunk] = sims.max(1).values.cpu()
    return out


def max_cos_sim_across(a: Tensor, b: Tensor, chunk: int = 4096) -> Tensor:
    """For each column of ``a`` [d_in, n_a], its largest cosine similarity to any column of ``b``
    [d_in, n_b] (e.g. each e2e feature's closest local feature). Not symmetric: call it both ways."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"directions of different widths: {a.shape[0]} and {b.shape[0]}")
    da, db = F.normalize(a.float(), dim=0), F.normalize(b.float(), dim=0).to(a.device)
    return torch.cat([(da[:, s : s + chunk].T @ db).max(1).values.cpu() for s in range(0, da.shape[1], chunk)])


# ---- one trained SAE, end to end ------------------------------------------------------------------


@dataclass
class EvalContext:
    """The frozen model, its tokenizer (None: token ids are shown) and the eval tokens: loaded once
    and shared by every SAE trained on the same model and eval set."""

    model: Any
    tokenizer: Any
    tokens: Tensor
    device: torch.device


def load_eval_context(cfg: RunConfig) -> EvalContext:
    """The run's model (with its weight processing, hooks checked) and its fixed held-out eval tokens."""
    from e2e_sae.assemble import load_checked_model, resolve_device
    from e2e_sae.data import load_eval_tokens
    from e2e_sae.tokenizer import resolve_tokenizer

    device = resolve_device(cfg.train.device)
    model = load_checked_model(cfg, device)
    tokenizer = resolve_tokenizer(cfg, model)
    tokens = load_eval_tokens(cfg.data.eval, cfg.data.n_ctx, cfg.data.n_eval_samples, tokenizer)
    return EvalContext(model, tokenizer, tokens, device)


@dataclass
class SAEAnalysis:
    stats: DictionaryStats
    directions: Tensor  # [d_in, n_dict] unit decoder columns (CPU)
    samples: dict[str, list[int]]  # kind -> element indices (sample_features)
    logit_effect: dict[str, Tensor] | None  # direct_logit_effect of the sampled elements, in sample order
    sampled: list[int]  # the sampled elements, in the order of logit_effect's rows
    init_directions: Tensor | None  # [d_in, n_dict]: initial_directions, None if unknown


def analyse_sae(
    trained: TrainedSAE,
    ctx: EvalContext,
    k: int = 10,
    n_per_kind: int = 8,
    seed: int = 0,
    n_logit_tokens: int = 10,
    left: int = 16,
    right: int = 4,
) -> SAEAnalysis:
    """The dictionary pass, a sample of elements and their direct logit effects, for one SAE.
    The logit effect needs the SAE's output to live in the residual stream (d_in == d_model);
    otherwise it is None."""
    cfg = trained.cfg
    autocast = cfg.train.autocast_bf16 if cfg.train.autocast_bf16 is not None else ctx.device.type == "cuda"
    spliced = SplicedModel(ctx.model, trained.sae.to(ctx.device), cfg.sae.position, autocast_bf16=autocast)
    stats = dictionary_pass(spliced, ctx.tokens, cfg.data.eval_batch_size, k=k, left=left, right=right)
    directions = trained.sae.dict_elements.detach().cpu()
    samples = sample_features(stats.fire_counts, n_per_kind, seed)
    sampled = [f for fs in samples.values() for f in fs]
    effect = None
    if sampled and directions.shape[0] == ctx.model.cfg.d_model:
        effect = direct_logit_effect(ctx.model, directions[:, sampled], n_logit_tokens)
    init = initial_directions(cfg, directions.shape[0])
    return SAEAnalysis(stats, directions, samples, effect, sampled, init)
