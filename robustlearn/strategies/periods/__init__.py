"""Critical learning periods: input deficits in an epoch window and the Fisher trace; see
docs/methods/critical_periods.md."""
