"""The base of every typed config: unknown keys are errors, so a misspelt field never passes silently."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
