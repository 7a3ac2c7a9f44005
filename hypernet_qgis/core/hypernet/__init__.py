"""HyperNet itself: the network and loss (parity-tested), training, per-date BatchNorm calibration, exact tiled
inference, the change intensity, model files, devices and allocators."""
