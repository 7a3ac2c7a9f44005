"""QGIS-free HyperNet engine: network, loss, training, detection, metrics, raster I/O."""

import os

# OpenMP threads that spin while waiting lose 10-40x when other programs share the cores (measured on a
# 2-core machine under load; BENCHMARKS.md). Passive waiting costs nothing on an idle machine. It must be
# set before torch starts its thread pool, so here, before any engine module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
