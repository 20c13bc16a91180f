"""Importance sampling and data selection: presampling (Katharopoulos & Fleuret), online batch selection,
Selective Backprop, InfoBatch, RHO-LOSS, random pruning. One file each; see docs/methods/."""

from robustlearn.strategies.sampling import (
    infobatch,
    online_batch_selection,
    presample,
    random_pruning,
    rho_loss,
    selective_backprop,
)

__all__ = ["infobatch", "online_batch_selection", "presample", "random_pruning", "rho_loss", "selective_backprop"]
