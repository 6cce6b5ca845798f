"""``python -m e2e_sae.builtin build|info``: see :mod:`e2e_sae.builtin.build`."""

import logging
import os
import sys

if __name__ == "__main__":
    # libgomp reads OMP_WAIT_POLICY once, when torch loads. With its default busy-waiting, 2 threads on
    # a 2-core machine shared with other jobs ran a training step 7-15x slower than 1 thread (measured
    # 1-2 s vs 0.15 s); passive waiting removes that. So set it and re-exec before torch is imported.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "e2e_sae.builtin", *sys.argv[1:]])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from e2e_sae.builtin.build import main  # after the re-exec above: torch must load with the policy set
    from e2e_sae.cli_exit import exit_with

    exit_with(main)
