"""Request bodies with OpenAI's names and limits; FastAPI turns violations into 400s naming the field."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

Auto = Literal["auto"]
_SUFFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: Auto | Annotated[StrictInt, Field(ge=1, le=256)] | None = None
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] | None = None
    n_epochs: Auto | Annotated[StrictInt, Field(ge=1, le=50)] | None = None

    def resolved(self) -> dict:
        """None means "auto", as OpenAI shows it until the job runs."""
        return {k: ("auto" if v is None else v) for k, v in self.model_dump().items()}

    def given(self) -> bool:
        return any(v is not None for v in self.model_dump().values())


class DPOHyperparameters(Hyperparameters):
    """OpenAI's FineTuneDPOHyperparameters: the supervised three plus beta, the pull towards the reference."""

    beta: Auto | Annotated[float, Field(gt=0, le=2)] | None = None


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class DPOMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DPOHyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DPOMethod | None = None
    reinforcement: dict | None = None


class WandbIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["wandb"]
    wandb: WandbIntegration


class CreateFineTuningJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    training_file: Annotated[str, Field(min_length=1)]
    validation_file: str | None = None
    suffix: str | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2147483647)] | None = None
    metadata: dict[str, str] | None = None
    integrations: Annotated[list[Integration], Field(max_length=5)] | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method
    method: Method | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        # ':' would break the ft:{base}:{org}:{suffix}:{id} model id, so only id-safe characters are allowed.
        if v is not None and not _SUFFIX.fullmatch(v):
            raise ValueError("suffix must be 1-64 characters of letters, digits, '-', '_' or '.'")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if len(v) > 16:
            raise ValueError(f"metadata can have at most 16 key-value pairs, got {len(v)}")
        for key, value in v.items():
            if len(key) > 64:
                raise ValueError(f"metadata key '{key[:20]}...' is longer than 64 characters")
            if len(value) > 512:
                raise ValueError(f"metadata value for '{key}' is longer than 512 characters")
        return v
