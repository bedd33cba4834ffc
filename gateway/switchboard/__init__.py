"""The fusion switchboard (融合总机): IVR menus, hunt groups, the operator, business hours.

* :mod:`.menu` — menus compiled from the dialplan and the menu state machine (pure, fed
  digits, prompt ends and timeouts with ``now``; outputs play / connect / hang-up actions);
* :mod:`.hunt` — sequential and simultaneous hunting plans (pure);
* :mod:`.service` — the SIP side: answers switchboard INVITEs with the gateway's RTP endpoint
  (:mod:`gateway.media`), runs the menu, hunts the targets and connects the caller.
"""
