"""Billing: charging events loaded into SQL exactly once, the tariff model and monthly statements."""
