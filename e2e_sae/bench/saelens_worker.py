"""Runs in the sae-lens venv (:mod:`e2e_sae.bench.saelens`), never imported by this package.

``python saelens_worker.py SPEC.pt OUT.pt``. SPEC is a list of cases, each with ``architecture``
(our name), ``cfg`` (keyword arguments of SAELens's training config for it), ``params`` (SAELens
parameter/buffer names -> tensors), ``x [tokens, d_in]``, ``dead [d_sae]`` bool and
``coefficients``. Per case: one training forward pass (``training_forward_pass``) and a backward of
its total loss; OUT holds per case ``feature_acts``, ``sae_out``, ``loss``, ``losses`` (each term),
``grads`` (each parameter) and ``buffers`` after the pass (BatchTopK's threshold).
"""

from __future__ import annotations

import sys

import torch
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

CLASSES = {
    "relu": (StandardTrainingSAE, StandardTrainingSAEConfig),
    "topk": (TopKTrainingSAE, TopKTrainingSAEConfig),
    "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
    "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig),
    "matryoshka_batchtopk": (MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig),
}


def main(spec_path: str, out_path: str) -> None:
    torch.save([run_case(case) for case in torch.load(spec_path, weights_only=True)], out_path)


def run_case(spec: dict) -> dict:
    sae_cls, cfg_cls = CLASSES[spec["architecture"]]
    sae = sae_cls(cfg_cls(**spec["cfg"]))
    with torch.no_grad():
        for name, value in spec["params"].items():
            getattr(sae, name).copy_(value)
    sae.train()
    step = TrainStepInput(
        sae_in=spec["x"],
        coefficients=spec["coefficients"],
        dead_neuron_mask=spec["dead"],
        n_training_steps=0,
        is_logging_step=False,
    )
    out = sae.training_forward_pass(step)
    out.loss.backward()
    return {
        "feature_acts": out.feature_acts.detach(),
        "sae_out": out.sae_out.detach(),
        "loss": out.loss.detach(),
        "losses": {k: torch.as_tensor(v).detach() for k, v in out.losses.items()},
        "grads": {n: p.grad for n, p in sae.named_parameters() if p.grad is not None},
        "buffers": {n: b.detach() for n, b in sae.named_buffers()},
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
