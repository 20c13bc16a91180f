"""Datasets (sources), label noise, the device-resident loader and the one datamodule."""
