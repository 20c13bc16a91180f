"""Strategies: every method is a Lightning Callback. Importing this package registers the built-in ones."""

from robustlearn.strategies import noisy
from robustlearn.strategies.base import Strategy

__all__ = ["Strategy", "noisy"]
