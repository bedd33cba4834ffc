"""The ``registrar`` section of ``config/gateway.yaml``: registrar, authentication and qualify policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DigestAlgorithmName = Literal["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"]
StoreName = Literal["auto", "memory", "redis"]
"""The names ``location_store`` and ``nonce_count_store`` accept (unset is ``auto``); the
factories: ``gateway.registrar.location.LOCATION_STORES``, ``gateway.registrar.digest.NONCE_COUNTS``."""
_DEFAULT_ALGORITHMS: tuple[DigestAlgorithmName, ...] = ("MD5",)


class QualifyConfig(BaseModel):
    """OPTIONS qualify of static / carrier trunk destinations and registered contacts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval: float = Field(default=30.0, gt=0, le=3600)
    failures_to_down: int = Field(default=3, ge=1, le=100)
    successes_to_up: int = Field(default=2, ge=1, le=100)
    # Also OPTIONS every registered contact at its NAT source address (keeps pinholes open;
    # RFC 5626 §3.5 style). Each gateway process pings every binding of a shared store.
    contacts: bool = False


class RegistrarConfig(BaseModel):
    """Registrar (RFC 3261 §10.3) and Digest (RFC 7616 / RFC 8760) settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The trunk file, relative to the project root; none: no trunks (nobody can register).
    trunks: Path | None = None
    realm: str = Field(default="ims-gateway", min_length=1, max_length=128)
    # Offered in this order as separate challenges (RFC 8760 §2.4: most preferred first).
    algorithms: list[DigestAlgorithmName] = Field(
        default_factory=lambda: list(_DEFAULT_ALGORITHMS), min_length=1
    )
    nonce_lifetime: float = Field(default=300.0, ge=10, le=3600)
    # Shared by every gateway process so each accepts the others' nonces. Absent: a random key
    # kept in Redis when Redis is configured, else per process.
    nonce_secret: str | None = Field(default=None, min_length=16)
    min_expires: int = Field(default=60, ge=1, le=86_400)
    max_expires: int = Field(default=3600, ge=1, le=86_400)
    default_expires: int = Field(default=3600, ge=1, le=86_400)
    max_contacts: int = Field(default=10, ge=1, le=1000)  # per address-of-record
    location_store: StoreName | None = None  # None or auto: redis if redis.url, else memory
    # Digest nonce counts seen (replay protection, RFC 7616 §3.4); None or auto: redis if
    # redis.url, else memory. In Redis every worker sees every count, so a captured request cannot be replayed
    # through another worker; a Redis error then refuses the request (fail closed).
    nonce_count_store: StoreName | None = None
    qualify: QualifyConfig = QualifyConfig()
    # Outbound registration runs in one process of the cluster, qualify in one process of each
    # node, chosen by a lease in Redis (gateway.cluster.lease): a holder that dies is replaced
    # within this many seconds plus a third of it. Without Redis the one process does both.
    lease_ttl: float = Field(default=15.0, ge=1, le=300)

    @model_validator(mode="after")
    def _expiry_bounds(self) -> RegistrarConfig:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        return self
