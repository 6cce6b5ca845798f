"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning multi-level features with Matryoshka SAEs").

BatchTopK (:mod:`.batchtopk`) over the whole dictionary, whose nested prefixes ``[0, m_1) ⊂ [0, m_2)
⊂ ... ⊂ [0, n_dict)`` each reconstruct the input on their own:
``x_hat_m = W_d[:, :m] c[:m] + b_d``. The loss sums the prefixes' losses: the mode's reconstruction
terms of the full dictionary plus the same terms for every inner prefix (local: MSE at the SAE, as the
paper and SAELens; e2e: the prefix's reconstruction spliced into the model, its KL and downstream MSE).
``sae.matryoshka_prefixes`` gives the inner prefixes as fractions of the dictionary.
"""

from __future__ import annotations

from e2e_sae.architectures.batchtopk import BatchTopK


class MatryoshkaBatchTopK(BatchTopK):
    name = "matryoshka_batchtopk"

    def __init__(
        self,
        n_dict: int,
        k: int,
        aux_coeff: float,
        dead_after_tokens: int,
        threshold_lr: float,
        prefixes: list[int],
        auxk_form: str = "saelens",
    ):
        super().__init__(n_dict, k, aux_coeff, dead_after_tokens, threshold_lr, auxk_form)
        self.prefixes = list(prefixes)

    def prefix_sizes(self) -> list[int]:
        return self.prefixes
