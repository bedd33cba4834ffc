"""The optional ``edge:`` section of the gateway configuration: the broker the edge agents use
and the operations signing key (see :mod:`edge_agent.signing`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.config import MqttConfig
from edge_agent.signing import KeyFileError, load_private_key


class EdgeOpsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mqtt: MqttConfig = MqttConfig()
    signing_key: Path | None = Field(
        default=None, description="operations Ed25519 private key (PEM); needed by gateway ctl edge push|cmd"
    )
    desired_lifetime_s: float = Field(default=7 * 86400, gt=0, description="how long a push stays valid")
    cmd_lifetime_s: float = Field(default=300, gt=0, description="how long a command stays valid")
    follow: bool = Field(default=True, description="subscribe to edge/+/state and events for /api/sites")
    stale_after_s: float = Field(default=90, gt=0, description="silence after which a site is stale")

    @field_validator("signing_key")
    @classmethod
    def _loadable(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                load_private_key(path)
            except KeyFileError as exc:
                raise ValueError(str(exc)) from exc
        return path
