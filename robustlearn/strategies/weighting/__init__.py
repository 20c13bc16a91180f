"""Importance weighting: class weights and per-sample weights, and Byrd & Lipton's predicted-share measurement. One
file each; see docs/methods/weighting.md."""

from robustlearn.strategies.weighting import predicted_share

__all__ = ["predicted_share"]
