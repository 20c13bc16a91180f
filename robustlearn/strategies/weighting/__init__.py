"""Importance weighting: class weights and per-sample weights, and Byrd & Lipton's predicted-share measurement. One
file each; see docs/methods/weighting.md."""

from robustlearn.strategies.weighting import class_weights, predicted_share, sample_weights

__all__ = ["class_weights", "predicted_share", "sample_weights"]
