"""Edge security: flood budgets, bans, scanners, auth-failure bans, sipvicious, TCP caps."""
