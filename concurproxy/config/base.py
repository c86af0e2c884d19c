from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base for every policy section: unknown keys are errors (typos must not pass silently),
    instances are frozen once validated (the running proxy never mutates its config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
