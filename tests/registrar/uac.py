"""The running gateway's UAC side, in-process on a free loopback port, for driving outbound
registration and qualify against real SIPp peers (the same path `gateway run` uses)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.node_settings import ListenConfig, SipConfig, SipTimersConfig
from gateway.registrar.service import GatewaySender
from tests.support.servers import free_port

# Short timers so Timer F (64*T1) is 1.28 s: silence is detected quickly.
FAST_TIMERS = SipTimersConfig(t1=0.02, t2=0.16, t4=0.2)


@contextlib.asynccontextmanager
async def gateway_sender() -> AsyncIterator[GatewaySender]:
    port = free_port(2)
    config = GatewayConfig(
        sip=SipConfig(listen=[ListenConfig(transport="udp", host="127.0.0.1", port=port)], timers=FAST_TIMERS)
    )
    gateway = Gateway(config.sip, config.node, config.overload)
    await gateway.start()
    try:
        yield GatewaySender(gateway)
    finally:
        await gateway.stop()
