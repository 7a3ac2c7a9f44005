"""QGIS-free HyperNet engine: network, loss, training, detection, metrics, raster I/O."""
