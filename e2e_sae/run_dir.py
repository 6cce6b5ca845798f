"""The layout of a run's output directory: the one place that spells its file names.

```
<output_dir>/config.yaml                                  the resolved run config
             metrics.jsonl                                one JSON object per train log / eval row
             metrics.json                                 the final evaluation (written atomically)
             checkpoints/samples_<n, 10 digits>/checkpoint.pt   (+ metrics.json in the last one)
             diverged.txt                                 why a group member stopped (non-finite loss)
             group.yaml                                   a grouped run's members (its output_dir only)
```

The sweep layer and the tests ask this module (or :class:`RunDir`) for paths; none of them spells a
file name of the library's.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_LOG_FILE = "metrics.jsonl"
METRICS_FILE = "metrics.json"  # the final evaluation: in the output_dir and in the last checkpoint
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FILE = "checkpoint.pt"  # inside one checkpoint directory
DIVERGED_FILE = "diverged.txt"
GROUP_FILE = "group.yaml"
_CHECKPOINT_PREFIX = "samples_"


def checkpoint_dir_name(n_samples: int) -> str:
    """``samples_0000002000``: zero-padded, so names sort in training order."""
    return f"{_CHECKPOINT_PREFIX}{n_samples:010d}"


def is_checkpoint_dir_name(name: str) -> bool:
    return name.startswith(_CHECKPOINT_PREFIX) and name[len(_CHECKPOINT_PREFIX) :].isdigit()


def samples_of(checkpoint_dir: Path) -> int:
    """The sample count a checkpoint directory was written at."""
    return int(checkpoint_dir.name[len(_CHECKPOINT_PREFIX) :])


class RunDir:
    """The paths of one run's output directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics_log(self) -> Path:
        return self.root / METRICS_LOG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, n_samples: int) -> Path:
        return self.checkpoints / checkpoint_dir_name(n_samples)

    @property
    def diverged(self) -> Path:
        return self.root / DIVERGED_FILE

    def write_diverged(self, why: str) -> None:
        """Mark the run (or a checkpoint directory of a group member) stopped by a non-finite loss."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.diverged.write_text(why + "\n")

    @property
    def group(self) -> Path:
        return self.root / GROUP_FILE
