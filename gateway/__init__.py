"""IMS fusion gateway: SIP trunks for customer IP-PBXs and IADs, short-number dialplans,
fusion-switchboard routing and charging events."""

__version__ = "0.1.0"
