"""Edge agent: runs on the customer-site gateway box, keeps its network configuration converged
(netlink), checks reachability (the three-step check of the private-line procedures) and reports
over MQTT under ``edge/<site>/``.

Layers: ``model`` (schemas), ``reconcile`` (pure diff), ``netlink`` (pyroute2 adapter),
``checks`` (reachability probes), ``mqtt`` (aiomqtt adapter + on-disk queue), ``agent``
(orchestration), ``cli``.
"""

__version__ = "0.1.0"
