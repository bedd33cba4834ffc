"""Security hooks shared by the SIP edge: authentication-failure events (bans, user locks)."""
