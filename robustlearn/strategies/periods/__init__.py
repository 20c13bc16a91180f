"""Critical learning periods: input deficits in an epoch window and the Fisher trace; see
docs/methods/critical_periods.md."""

from robustlearn.strategies.periods import deficit, fisher_trace

__all__ = ["deficit", "fisher_trace"]
