"""The user-facing error of the whole package, in a module of its own so that every module can raise
it without importing the config (:mod:`e2e_sae.config` re-exports it, where it is documented)."""


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line naming the field and the fix."""
