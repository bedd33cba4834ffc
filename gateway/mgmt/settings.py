"""The ``api`` section of ``config/gateway.yaml``: where the operations API listens, who may use it.

Tokens are bearer tokens with a role: ``read`` (every GET) or ``admin`` (also every change).
Give a token either in clear (``token``, for the demo and tests) or as the hex SHA-256 of the
token (``token_sha256``, for production configs: the file then holds no secret). Tokens are
compared in constant time (:mod:`gateway.mgmt.auth`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Port = Annotated[int, Field(ge=0, le=65535)]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiToken(_Section):
    """One API client: its name (written to the audit log), its token and its role."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    token: str | None = Field(default=None, min_length=16, max_length=256, repr=False)
    token_sha256: str | None = None
    role: Literal["read", "admin"] = "read"

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token or token_sha256")
        if self.token_sha256 is not None and not _HEX64.match(self.token_sha256):
            raise ValueError("token_sha256 must be 64 lower-case hex digits (sha256sum of the token)")
        return self


class ApiConfig(_Section):
    """The operations HTTP API and web console."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8080  # 0: any free port (tests); the bound port is logged
    tokens: list[ApiToken] = Field(default_factory=list)
    # JSON lines, one per change (who, when, what, before / after); relative to state_dir.
    audit_log: Path = Path("audit.log")
    # Redis stream the audit records are also added to when Redis is configured.
    audit_stream: str = Field(default="gw:audit", min_length=1, max_length=128)
    audit_stream_maxlen: int = Field(default=100_000, ge=1000)
    # Dialplan versions kept on disk (older ones are pruned; the active one always stays).
    dialplan_versions: int = Field(default=50, ge=2, le=10_000)

    @model_validator(mode="after")
    def _unique_names(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"token names must be unique: {', '.join(dupes)}")
        return self
