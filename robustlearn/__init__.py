"""robustlearn: robust training of neural networks as composable Lightning callbacks."""

__version__ = "0.1.0"
