"""An SAE spliced into a frozen TransformerLens 4 model at one hook point.

Where the speed comes from: the clean pass runs once without gradients and caches the SAE input and
the downstream activations; for ``blocks.L.hook_resid_pre`` the spliced pass then *starts at block
L* from the SAE output (``start_at_layer``) instead of recomputing blocks 0..L-1, and a local-only
pass *stops at block L* (``stop_at_layer``). Other hook points splice by a forward hook over the
whole model. Both paths compute the same function (tested to float tolerance).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from e2e_sae.hooks import hook_layer, resid_pre_layer
from e2e_sae.losses import Reconstruction
from e2e_sae.sae import SAE, SAEOutput


@dataclass
class CleanPass:
    """What the original model computed (no gradients)."""

    acts: Tensor  # SAE input [batch, pos, d_in]
    logits: Tensor | None = None  # [batch, pos, vocab]
    downstream: dict[str, Tensor] = field(default_factory=dict)

    def needed_logits(self) -> Tensor:
        return _needed(self.logits)


@dataclass
class SplicedPass(SAEOutput):
    """The SAE's outputs (acts_hat, c, c_norm, fired) and, past the SAE, the spliced model's."""

    logits: Tensor | None = None
    downstream: dict[str, Tensor] = field(default_factory=dict)
    # the inner Matryoshka prefixes' reconstructions and, past the SAE, what the model made of each
    prefixes: list[Reconstruction] = field(default_factory=list)

    def needed_logits(self) -> Tensor:
        return _needed(self.logits)


def _needed(logits: Tensor | None) -> Tensor:
    """The logits of a pass that was asked for them (``need_logits=True``); a bug in the caller otherwise."""
    if logits is None:
        raise RuntimeError("these logits were not computed: run the pass with need_logits=True")
    return logits


class SplicedModel(nn.Module):
    """A frozen language model with an SAE at ``position``; gradients reach only the SAE."""

    def __init__(
        self,
        model: TransformerBridge,
        sae: SAE,
        position: str,
        downstream_hooks: list[str] | None = None,
        autocast_bf16: bool = False,
        start_at_sae_layer: bool = True,
        p_norm: float = 1.0,
        sae_kernel: str = "autograd",
    ):
        super().__init__()
        self.model = model
        self.sae = sae
        self.position = position
        self.downstream_hooks = list(downstream_hooks or [])
        self.autocast_bf16 = autocast_bf16
        self.p_norm = p_norm
        self.sae_kernel = sae_kernel  # resolved: sparse | dense | autograd (e2e_sae.sae_kernels)
        self.sae_layer: int | None = resid_pre_layer(position) if start_at_sae_layer else None

    # ---- helpers -------------------------------------------------------------------------------

    def _lm_context(self):
        """bf16 autocast for the language model only (CUDA); the SAE always runs in fp32."""
        if self.autocast_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def run_sae(self, acts: Tensor) -> SAEOutput:
        """The SAE on the clean activations, in fp32 (outside any autocast)."""
        with torch.autocast(device_type=acts.device.type, enabled=False):
            return self.sae.forward_with_stats(acts.float(), self.p_norm, self.sae_kernel)

    def _capture_hooks(self, store: dict[str, Tensor]) -> list:
        """Forward hooks that record the downstream activations under their requested names."""

        def saver(name: str):
            def save(act: Tensor, hook) -> Tensor:
                store[name] = act
                return act

            return save

        return [(h, saver(h)) for h in self.downstream_hooks]

    # ---- passes --------------------------------------------------------------------------------

    @torch.no_grad()
    def clean_forward(self, tokens: Tensor, need_logits: bool = True) -> CleanPass:
        """The original model's logits (if needed), SAE input and downstream activations."""
        with self._lm_context():
            if not need_logits and self.sae_layer is not None:
                acts = self.model(tokens, stop_at_layer=self.sae_layer)
                return CleanPass(acts=acts.float())
            names = {self.position, *self.downstream_hooks} if need_logits else {self.position}
            layer = hook_layer(self.position)
            stop = None if need_logits or layer is None else layer + 1
            logits, cache = self.model.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=stop)
        return CleanPass(
            acts=cache[self.position].float(),
            logits=logits if need_logits else None,
            downstream={h: cache[h] for h in self.downstream_hooks} if need_logits else {},
        )

    def spliced_forward(self, tokens: Tensor, clean: CleanPass, need_logits: bool = True) -> SplicedPass:
        """Run the SAE on the clean activations and, if needed, the model onward from its output."""
        if not need_logits:
            out = self.run_sae(clean.acts)
            return SplicedPass(**vars(out), prefixes=[Reconstruction(h) for h in out.prefix_hats])
        downstream: dict[str, Tensor] = {}
        if self.sae_layer is not None:
            out = self.run_sae(clean.acts)
            logits, downstream = self.run_suffix(out.acts_hat)
        else:
            hooks = self._capture_hooks(downstream)
            result: dict[str, SAEOutput] = {}

            def splice(act: Tensor, hook) -> Tensor:
                result["out"] = self.run_sae(act)
                return result["out"].acts_hat.to(act.dtype)

            with self._lm_context():
                logits = self.model.run_with_hooks(tokens, fwd_hooks=[(self.position, splice), *hooks])
            out = result["out"]
        return SplicedPass(
            **vars(out), logits=logits, downstream=downstream, prefixes=self.prefix_passes(tokens, out.prefix_hats)
        )

    def prefix_passes(self, tokens: Tensor, prefix_hats: list[Tensor]) -> list[Reconstruction]:
        """The model past the SAE from each inner prefix's reconstruction (Matryoshka; none otherwise):
        one suffix pass with the prefixes stacked along the batch from a ``hook_resid_pre``, else a
        hooked pass each."""
        if not prefix_hats:
            return []
        if self.sae_layer is not None:
            logits, downstream = self.run_suffix(torch.cat(prefix_hats))
            b = tokens.shape[0]
            return [
                Reconstruction(
                    h, logits[i * b : (i + 1) * b], {n: v[i * b : (i + 1) * b] for n, v in downstream.items()}
                )
                for i, h in enumerate(prefix_hats)
            ]
        out = []
        for h in prefix_hats:
            store: dict[str, Tensor] = {}
            hooks = [(self.position, lambda act, hook, h=h: h.to(act.dtype)), *self._capture_hooks(store)]
            with self._lm_context():
                out.append(Reconstruction(h, self.model.run_with_hooks(tokens, fwd_hooks=hooks), store))
        return out

    def run_suffix(self, acts_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and downstream activations of the model from block ``sae_layer`` on, given the
        residual stream there (``[batch, pos, d_model]``; a grouped run stacks its members along batch)."""
        assert self.sae_layer is not None, "run_suffix needs an SAE at a hook_resid_pre"
        downstream: dict[str, Tensor] = {}
        with self._lm_context():
            logits = self.model.run_with_hooks(
                acts_hat, start_at_layer=self.sae_layer, fwd_hooks=self._capture_hooks(downstream)
            )
        return logits, downstream

    @torch.no_grad()
    def replaced_logits(self, tokens: Tensor, acts: Tensor) -> Tensor:
        """Logits with the hook's activation replaced by ``acts`` (e.g. zeros for zero-ablation)."""
        with self._lm_context():
            if self.sae_layer is not None:
                return self.model(acts, start_at_layer=self.sae_layer)
            return self.model.run_with_hooks(tokens, fwd_hooks=[(self.position, lambda a, hook: acts.to(a.dtype))])
