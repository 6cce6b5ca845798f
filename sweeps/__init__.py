"""Ray Tune sweeps of e2e_sae runs and their Pareto reports: ``python -m sweeps --help``."""
