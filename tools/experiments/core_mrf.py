"""Score the core's default map rule (fusion.fuse + thresholds.binary_change "mrf" vs "mixture") on the cache.

    OMP_NUM_THREADS=1 python tools/experiments/core_mrf.py [epochs=20]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyse import BEST, PAIRS, get_pair, load_features, root_mse  # noqa: E402
from harness import classic, kappa_auc, key, oracle_kappa  # noqa: E402

from hypernet_qgis.core.classic.thresholds import binary_change  # noqa: E402
from hypernet_qgis.core.fusion import fuse  # noqa: E402

spec = sys.argv[1] if len(sys.argv) > 1 else "epochs=20"
opts = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
for n in PAIRS:
    pair, ref = get_pair(n)
    c = classic(n)
    rows: dict[str, list] = {}
    for s in [s for s in range(5) if key(n, s, opts).exists()]:
        f1, f2, _ = load_features(n, s, opts)
        fused = fuse(root_mse(f1, f2) ** 2, {"irmad": c["irmad"], "cva": c["cva"]}, pair.valid)
        orc = oracle_kappa(fused, ref)
        for how in ("mixture", "mrf"):
            t0 = time.perf_counter()
            b, _ = binary_change(fused, pair.valid, how)
            dt = time.perf_counter() - t0
            k, a = kappa_auc(b, fused, ref)
            rows.setdefault(how, []).append((k, a, orc, dt))
    for how, r in rows.items():
        r = np.array(r)
        ks = r[:, 0]
        print(f"{n:19s} fused {how:8s} kappa {ks.mean():.3f} sd {ks.std():.3f} [{' '.join(f'{k:.3f}' for k in ks)}] "
              f"AUC {r[:, 1].mean():.4f} oracle {r[:, 2].mean():.3f} (vs best {ks.mean() - BEST[n]:+.3f}) "
              f"map {r[:, 3].mean():.2f}s", flush=True)
