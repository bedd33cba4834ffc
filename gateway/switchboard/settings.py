"""The ``switchboard`` section of ``config/gateway.yaml``: the RTP endpoint and IVR limits.

Menus, hunt groups and the operator group are the group's dialplan data (``switchboard:`` in
``dialplans/<group>.yaml``); this section is about the process: where RTP is bound, which
ports it may use, how long things may take.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SwitchboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    rtp_host: str | None = Field(
        default=None, description="address RTP binds to and SDP announces; default: the first SIP listener's"
    )
    rtp_port_first: int = Field(default=20000, ge=1024, le=65534)
    rtp_port_last: int = Field(default=29999, ge=1024, le=65535)
    max_calls: int = Field(default=2000, ge=1, description="IVR calls at once; more are answered 503")
    member_ring_seconds: int = Field(default=30, ge=1, le=300, description="a member keyed at the menu")
    media_timeout: float = Field(
        default=60.0, gt=0, description="seconds without any RTP or key from the caller in the IVR: hang up"
    )
    max_ivr_seconds: float = Field(default=600.0, gt=0, description="longest time in menus and hunting")
    status_socket: Path | None = Field(
        default=None, description="UNIX socket serving the switchboard's state as JSON (under state_dir)"
    )
    fixed_time: dt.datetime | None = Field(
        default=None, description="for tests and demos: the time the schedule is evaluated at"
    )

    @field_validator("rtp_host")
    @classmethod
    def _ip_literal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ValueError(f"must be an IPv4 or IPv6 address, not {value!r}") from None

    @model_validator(mode="after")
    def _range(self) -> SwitchboardSettings:
        if self.rtp_port_last <= self.rtp_port_first:
            raise ValueError("rtp_port_last must be above rtp_port_first")
        return self
