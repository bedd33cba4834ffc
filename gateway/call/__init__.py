"""Call control: the signalling B2BUA (every call is two dialogs), its limits, timers and registry.

* :mod:`.settings` — the ``call`` section of ``config/gateway.yaml``;
* :mod:`.model` — the shared models: routes, destinations, legs, calls, the observer protocol
  and the typed end of a call (``EndCause``: charging end reason + Q.850 cause);
* :mod:`.state` — the call state machine (enum + one transition table);
* :mod:`.policy` — what crosses from one leg to the other (header whitelist, caller ID, privacy);
* :mod:`.limits` — concurrent-call and calls-per-second limits (memory and Redis back ends);
* :mod:`.routing` — targets from the dialplan / static routes, resolved to destinations;
* :mod:`.b2bua` — the B2BUA core wired to :class:`gateway.app.Gateway`;
* :mod:`.service` — ``install(gateway, config, ...)`` and the status socket.
"""
