from e2e_sae.cli_exit import exit_with
from sweeps.cli import main

exit_with(main)
