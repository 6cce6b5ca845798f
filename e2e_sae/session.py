"""The runs of one process set up, restored and trained: the one path of a single run and of a group.

A session loads the frozen model once, splices each run's SAE into it (seeded by the run's own
``seed``, in the order given), opens the shared training stream and held-out tokens, and puts each run
back where its checkpoint left it. :func:`e2e_sae.train.train` opens a session of one run;
:func:`e2e_sae.group.train_group` one of K members sharing a clean forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from e2e_sae.assemble import load_checked_model, read_pretrained_sae, resolve_device, splice_sae
from e2e_sae.checkpoint import load_checkpoint, set_rng_state
from e2e_sae.config import ConfigError, RunConfig
from e2e_sae.data import RowStream, TensorStream, load_eval_tokens, open_train_stream
from e2e_sae.finetune import load_parent_optimizer, read_parent
from e2e_sae.loop import MicroStep, Reporter, Run, run_loop
from e2e_sae.run_dir import RunDir
from e2e_sae.tokenizer import check_tokenizer, resolve_tokenizer


@dataclass
class Session:
    runs: list[Run]
    stream: TensorStream | RowStream  # the sample order every run shares (``data`` of the first config)
    eval_tokens: torch.Tensor
    device: torch.device

    @classmethod
    def open(cls, cfgs: list[RunConfig], reporters: list[Reporter | None] | None = None) -> Session:
        """The model, data and SAEs (fresh, ``sae.pretrained_path``'s or a fine-tune's parent's) of runs that
        share everything but their SAEs (checked by the caller: a group's members, or one run)."""
        base = cfgs[0]
        device = resolve_device(base.train.device)
        parents = [read_parent(c) for c in cfgs]  # before the model loads: a mismatch costs nothing
        pretrained = [read_pretrained_sae(c, p) for c, p in zip(cfgs, parents, strict=True)]
        model = load_checked_model(base, device)
        reporters = reporters or [None] * len(cfgs)
        runs = [
            Run(c, splice_sae(c, model, device, sae), r, parent)
            for c, sae, r, parent in zip(cfgs, pretrained, reporters, parents, strict=True)
        ]
        tokenizer = resolve_tokenizer(base, model)
        check_tokenizer(base, tokenizer)
        stream = open_train_stream(base.data.train, base.data.n_ctx, base.data_seed, tokenizer)
        eval_tokens = load_eval_tokens(base.data.eval, base.data.n_ctx, base.data.n_eval_samples, tokenizer)
        return cls(runs, stream, eval_tokens, device)

    def restore(self, sources: list[Path | None], stopped: list[str | None] | None = None) -> None:
        """Each run as its source left it: stopped (``stopped[i]``, why: a group member that diverged),
        restored from its checkpoint directory (the data stream and RNG too: the same in every run's
        checkpoint of one session), or fresh (None; a fine-tune asked for it gets its parent's Adam moments)."""
        stopped = stopped or [None] * len(self.runs)
        for run, why, source in zip(self.runs, stopped, sources, strict=True):
            if why is not None:
                run.error = why
            elif source is not None:
                RunDir(run.cfg.output_dir).diverged.unlink(missing_ok=True)  # stale: the checkpoint has it alive
                state = load_checkpoint(source)
                run.restore(state)
                self.stream.restore(state["data"])
                set_rng_state(state["rng"])
            elif run.parent is not None and run.cfg.finetune is not None and run.cfg.finetune.optimizer_state:
                load_parent_optimizer(run.optimizer, run.parent)
        restored = {run.n_samples for run, source in zip(self.runs, sources, strict=True) if source is not None}
        if len(restored) > 1:
            raise ConfigError(f"resume_from: the runs' checkpoints are at different sample counts {sorted(restored)}")

    def train(
        self,
        micro_step: MicroStep,
        *,
        resume: bool,
        stop_alone: bool = False,
        progress: bool = True,
        after_reports: Callable[[list[Run]], None] | None = None,
    ) -> None:
        """Open each live run's outputs and train to the end (:func:`e2e_sae.loop.run_loop`); a run that
        stopped (``stop_alone``: the others go on) is marked in its output_dir; W&B runs are closed
        whatever happens."""
        try:
            for run in self.runs:
                if run.error is None:
                    run.open_outputs(resume=resume)
            run_loop(
                self.runs,
                self.stream,
                self.eval_tokens,
                self.device,
                micro_step,
                stop_alone=stop_alone,
                progress=progress,
                after_reports=after_reports,
            )
        finally:
            for run in self.runs:
                if run.error is not None and not RunDir(run.cfg.output_dir).diverged.is_file():
                    RunDir(run.cfg.output_dir).write_diverged(run.error)  # a member resumed diverged, too
                run.close()
