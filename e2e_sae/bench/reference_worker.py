"""The reference side of ``python -m e2e_sae.bench --reference``: runs in the reference venv only.

Usage: ``DIR/venv/bin/python -P -s reference_worker.py SPEC.json OUT.json`` (never imported by this project:
``e2e_sae`` here is the authors' package, PyPI ``e2e-sae``).

Builds the training step from the reference's public pieces as its ``train()`` composes them: a
frozen ``HookedTransformer`` inside ``SAETransformer``; ``forward_raw`` (the whole model for KL or
downstream losses, else up to the block after the SAE) then ``forward`` (the whole SAE-augmented
model, or just the SAE on the cached activations for local runs); ``calc_loss``; backward; grad-norm
clip, Adam, cosine schedule. The model weights come from our TL-native model, converted to
HookedTransformer's parameter layout; the SAE weights and the tokens are ours too.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from e2e_sae.losses import LossConfigs, calc_loss
from e2e_sae.models.sparsifiers import SAE
from e2e_sae.models.transformers import SAETransformer
from e2e_sae.utils import get_cosine_schedule_with_warmup

PHASES = ("clean_forward", "spliced_forward", "backward", "optimizer", "bookkeeping")


def to_hooked_transformer(shape: dict, state: dict[str, torch.Tensor]) -> HookedTransformer:
    """TL-native weights (q/k/v/o and MLP as ``nn.Linear``) -> HookedTransformer's layout.

    Native ``attn.q.weight [n_heads*d_head, d_model]`` -> ``W_Q [n_heads, d_model, d_head]`` (same for
    K, V); ``attn.o.weight [d_model, n_heads*d_head]`` -> ``W_O [n_heads, d_head, d_model]``; MLP and
    unembedding weights are transposed (HookedTransformer multiplies ``x @ W``).
    """
    cfg = HookedTransformerConfig(**shape)
    h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    new = {
        "embed.W_E": state["embed.weight"],
        "pos_embed.W_pos": state["pos_embed.weight"],
        "ln_final.w": state["ln_final.weight"],
        "ln_final.b": state["ln_final.bias"],
        "unembed.W_U": state["unembed.weight"].T,
        "unembed.b_U": state["unembed.bias"],
    }
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        for x in "qkv":
            new[f"{p}attn.W_{x.upper()}"] = state[f"{p}attn.{x}.weight"].view(h, dh, d).transpose(1, 2)
            new[f"{p}attn.b_{x.upper()}"] = state[f"{p}attn.{x}.bias"].view(h, dh)
        new[f"{p}attn.W_O"] = state[f"{p}attn.o.weight"].T.reshape(h, dh, d)
        new[f"{p}attn.b_O"] = state[f"{p}attn.o.bias"]
        for ln in ("ln1", "ln2"):
            new[f"{p}{ln}.w"], new[f"{p}{ln}.b"] = state[f"{p}{ln}.weight"], state[f"{p}{ln}.bias"]
        new[f"{p}mlp.W_in"], new[f"{p}mlp.b_in"] = state[f"{p}mlp.in.weight"].T, state[f"{p}mlp.in.bias"]
        new[f"{p}mlp.W_out"], new[f"{p}mlp.b_out"] = state[f"{p}mlp.out.weight"].T, state[f"{p}mlp.out.bias"]
    model = HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict({k: v.contiguous() for k, v in new.items()}, strict=False)
    missing = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]  # buffers, not weights
    if missing or unexpected:
        raise SystemExit(f"weight conversion incomplete: missing {missing}, unexpected {unexpected}")
    return model


def our_term_names(loss_dict: dict[str, torch.Tensor], position: str) -> dict[str, float]:
    """Reference loss-dict keys -> ours (``loss/sparsity``, ...); downstream MSE averaged over hooks."""
    out, downstream = {}, []
    for key, value in loss_dict.items():
        name = key.removeprefix("loss/train/")
        if name == "logits_kl":
            out["loss/logits_kl"] = value.item()
        elif name == f"sparsity/{position}":
            out["loss/sparsity"] = value.item()
        elif name == f"out_to_in/{position}":
            out["loss/out_to_in"] = value.item()
        elif name.startswith("in_to_orig/"):
            downstream.append(value.item())
    if downstream:
        out["loss/in_to_orig"] = sum(downstream) / len(downstream)
    return out


class ReferenceStep:
    """The reference's model, loss configs, optimizer and schedule for one benchmark, built as its
    ``train()`` builds them, with our LM weights, SAE weights and settings from the spec."""

    def __init__(self, spec: dict, blob: dict, device: torch.device):
        position = spec["position"]
        self.model = SAETransformer(
            to_hooked_transformer(spec["lm_shape"], blob["lm"]),
            [position],
            spec["n_dict"] / spec["lm_shape"]["d_model"],
        )
        key = position.replace(".", "-")
        if self.model.saes[key].n_dict_components != spec["n_dict"]:
            self.model.saes[key] = SAE(spec["lm_shape"]["d_model"], spec["n_dict"])
        self.model.saes[key].load_state_dict(blob["sae"])
        self.model.to(device)
        for name, param in self.model.named_parameters():  # as train(): only the SAE trains
            param.requires_grad = name.startswith("saes.")
        self.position = position
        self.loss_configs = LossConfigs(**spec["loss"])
        self.cache_positions = None
        if self.loss_configs.in_to_orig is not None:
            self.cache_positions = [h for h in self.loss_configs.in_to_orig.hook_positions if h != position]
        self.is_local = self.loss_configs.logits_kl is None and self.cache_positions is None
        local_block = self.is_local and position.startswith("blocks.")
        self.final_layer = int(position.split(".")[1]) + 1 if local_block else None
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=spec["lr"])
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, spec["warmup_lr_steps"], spec["total_steps"], min_lr_factor=spec["min_lr_factor"]
        )
        self.max_grad_norm = spec["max_grad_norm"]

    def micro_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict, list[float]]:
        """Clean pass, spliced pass and loss of one micro-batch: (loss, loss dict, the two phases' ends)."""
        model = self.model
        orig_logits, orig_acts = model.forward_raw(
            batch,
            run_entire_model=not self.is_local,
            final_layer=self.final_layer,
            cache_positions=self.cache_positions,
        )
        t1 = now()
        new_logits, new_acts = model.forward(
            batch,
            sae_positions=model.raw_sae_positions,
            cache_positions=self.cache_positions,
            orig_acts=orig_acts if self.is_local else None,
        )
        loss, loss_dict = calc_loss(
            orig_acts=orig_acts,
            new_acts=new_acts,
            orig_logits=None if new_logits is None else orig_logits.detach().clone(),
            new_logits=new_logits,
            loss_configs=self.loss_configs,
            is_log_step=False,
        )
        return loss, loss_dict, [t1, now()]

    def optimizer_step(self) -> float | None:
        """Clip, Adam, schedule; returns the grad norm before clipping (None without clipping)."""
        grad_norm = None
        if self.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.saes.parameters(), self.max_grad_norm).item()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        return grad_norm


_CUDA = False


def now() -> float:
    """A timestamp after the device's queued work (CUDA) has finished."""
    if _CUDA:
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_steps(ref: ReferenceStep, tokens: torch.Tensor, spec: dict) -> tuple[dict, list[float], dict, float]:
    """``warmup + steps`` optimizer steps; returns the per-phase totals and step times of the timed
    steps, the first step's loss terms and grad norm, and the last step's mean loss."""
    accum, steps, warmup = spec["grad_accum_steps"], spec["steps"], spec["warmup"]
    totals, step_times, first, last_loss = dict.fromkeys(PHASES, 0.0), [], None, float("nan")
    for step in range(warmup + steps):
        if step == warmup:
            totals = dict.fromkeys(PHASES, 0.0)
        t_step = sum(totals.values())
        loss_sum = torch.zeros((), device=tokens.device)
        for micro in range(accum):
            t0 = now()
            loss, loss_dict, (t1, t2) = ref.micro_batch(tokens[step * accum + micro])
            (loss / accum).backward()
            t3 = now()
            loss_sum += loss.detach().sum()
            if first is None:
                first = {"loss": loss.item(), "terms": our_term_names(loss_dict, ref.position)}
            t4 = now()
            for phase, dt in zip(PHASES[:3] + PHASES[4:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                totals[phase] += dt
        t0 = now()
        last_loss = loss_sum.item() / accum
        grad_norm = ref.optimizer_step()
        totals["optimizer"] += now() - t0
        if step == 0:
            first["grad_norm"] = grad_norm
        if step >= warmup:
            step_times.append(sum(totals.values()) - t_step)
    return totals, step_times, first, last_loss


def machine_record(device: torch.device) -> dict:
    """Peak memory and what ran it: the same fields as our side's record."""
    cuda = device.type == "cuda"
    if cuda:
        memory = {
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_memory_kind": "cuda_max_memory_allocated",
        }
    else:
        memory = {
            "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory_kind": "cpu_peak_rss",
        }
    return {
        **memory,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor(),
    }


def main(spec_path: str, out_path: str) -> None:
    global _CUDA
    import importlib.metadata as md

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    blob = torch.load(spec["weights"], map_location="cpu", weights_only=True)
    ref = ReferenceStep(spec, blob, device)
    tokens = blob["tokens"].to(device)
    _CUDA = device.type == "cuda"
    if _CUDA:
        torch.cuda.reset_peak_memory_stats(device)
    totals, step_times, first, last_loss = timed_steps(ref, tokens, spec)
    steps, timed_s = spec["steps"], sum(totals.values())
    tokens_per_step = tokens.shape[1] * tokens.shape[2] * spec["grad_accum_steps"]
    result = {
        "side": "reference",
        "reference_version": md.version("e2e-sae"),
        "transformer_lens_version": md.version("transformer-lens"),
        "steps": steps,
        "warmup_steps": spec["warmup"],
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step * steps / timed_s,
        "ms_per_step": {**{k: 1000 * v / steps for k, v in totals.items()}, "total": 1000 * timed_s / steps},
        "ms_per_step_median": 1000 * statistics.median(step_times),
        "first_step": first,
        "last_loss": last_loss,
        **machine_record(device),
    }
    Path(out_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
