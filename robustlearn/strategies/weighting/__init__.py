"""Importance weighting: class weights and per-sample weights. One file each; see docs/methods/weighting.md."""
