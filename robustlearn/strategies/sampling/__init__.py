"""Importance sampling and data selection: presampling (Katharopoulos & Fleuret), online batch selection,
Selective Backprop, InfoBatch, RHO-LOSS, random pruning. One file each; see docs/methods/."""
