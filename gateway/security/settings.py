"""The ``security`` section of ``config/gateway.yaml``: flood budgets, bans, scanners, lockouts."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# User-Agents of SIP scanning and password-guessing tools seen against public SIP services
# (the lists of Kamailio's secfilter and fail2ban's asterisk filters). Real phones never send them.
DEFAULT_SCANNERS = (
    "friendly-scanner", "sipvicious", "sipcli", "sip-scan", "VaxSIPUserAgent", "VaxIPUserAgent",
    "sundayddr", "iWar", "SIVuS", "smap", "siparmyknife", "Gulp", "PortSIP VoIP SDK", "pplsip",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloodSettings(_Section):
    """Per-source-address budget, checked on raw bytes before parsing (Kamailio ``pike``)."""

    # Any address that is not a configured trunk: this many messages in a burst, refilled
    # over `window` seconds; more and the address is banned for `ban_time` seconds.
    requests: int = Field(default=16, ge=1, le=1_000_000)
    window: float = Field(default=2.0, gt=0, le=3600)
    # Addresses of configured trunks (peer match hosts / networks, carrier destinations):
    # null = no limit; otherwise their excess is dropped, never banned.
    trunk_requests: int | None = Field(default=None, ge=1, le=10_000_000)
    # An address that proved a password (a registered IAD or PBX: many lines, one address)
    # gets this budget for `authenticated_for` seconds after its last successful login.
    authenticated_requests: int = Field(default=160, ge=1, le=10_000_000)
    authenticated_for: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    # Source addresses remembered at once (spoofed floods cannot grow memory past this).
    max_sources: int = Field(default=100_000, ge=100, le=10_000_000)


class AuthBanSettings(_Section):
    """Bans after repeated authentication failures from one source address."""

    failures: int = Field(default=10, ge=1, le=100_000)
    window: float = Field(default=60.0, gt=0, le=86_400)


class UserLockSettings(_Section):
    """A user name attacked from many addresses is locked: every attempt fails as a wrong
    password would (same 401/407, no oracle), and an alert is logged and counted."""

    failures: int = Field(default=30, ge=1, le=1_000_000)
    window: float = Field(default=300.0, gt=0, le=86_400)
    duration: float = Field(default=900.0, gt=0, le=30 * 86_400)


BanStoreName = Literal["auto", "memory", "redis"]
"""The names ``security.store`` accepts (the factories: ``gateway.security.bans.BAN_STORES``)."""


class SecuritySettings(_Section):
    """Flood and scan defence before parsing; bans shared by every worker."""

    enabled: bool = True
    flood: FloodSettings = FloodSettings()
    # Seconds an address stays banned (flood, scanner, authentication failures).
    ban_time: float = Field(default=300.0, gt=0, le=30 * 86_400)
    # Messages whose User-Agent contains one of these (case-insensitive) are dropped unanswered
    # and their source banned. [] turns the check off.
    scanner_user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNERS))
    auth_failures: AuthBanSettings = AuthBanSettings()
    user_lock: UserLockSettings = UserLockSettings()
    # Addresses or networks (CIDR) never banned automatically (monitoring, the operator's own
    # hosts, a Kamailio dispatcher in front); like trunks, no budget by default and their
    # authentication failures lock nobody. Loopback by default: it cannot arrive from outside
    # (the kernel drops martian loopback sources on other interfaces).
    exempt: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Where bans live: redis (shared by every worker and gateway) when redis.url is set.
    store: BanStoreName = "auto"
    redis_key: str = Field(default="gw:bans", min_length=1, max_length=100)
    # Seconds between two reads of the shared store (a ban or lift reaches every worker within it).
    sync_interval: float = Field(default=1.0, gt=0, le=60)

    @field_validator("scanner_user_agents")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or any(c in name for c in "\r\n"):
                raise ValueError(f"user agent {name!r} must be non-empty text on one line")
        return value

    @field_validator("exempt")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value
