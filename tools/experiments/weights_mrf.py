"""HyperNet's weight in the fused mean (hn*w + irmad + cva) / (w + 2) under the core's mixture and mrf maps."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyse import BEST, PAIRS, get_pair, hn_intensity, medn  # noqa: E402
from harness import classic, kappa_auc, key, oracle_kappa  # noqa: E402

from hypernet_qgis.core.classic.thresholds import binary_change  # noqa: E402

opts = {"epochs": "20"}
for n in PAIRS:
    pair, ref = get_pair(n)
    c = classic(n)
    v = pair.valid
    ir, cv = medn(c["irmad"], v), medn(c["cva"], v)
    seeds = [s for s in range(5) if key(n, s, opts).exists()]
    hns = [np.where(v, h, np.nan) for h, _ in hn_intensity(n, seeds, opts, 1)]
    for w in (0.0, 0.5, 1.0, 2.0):
        for how in ("mixture", "mrf"):
            ks, ors = [], []
            for h in hns:
                f = np.where(v, (w * h + ir + cv) / (w + 2), np.nan).astype(np.float32)
                ks.append(kappa_auc(binary_change(f, v, how)[0], f, ref)[0])
                ors.append(oracle_kappa(f, ref))
            ks = np.array(ks)
            print(f"{n:19s} hn weight {w:3.1f} {how:8s} kappa {ks.mean():.3f} sd {ks.std():.3f} "
                  f"[{' '.join(f'{k:.3f}' for k in ks)}] oracle {np.mean(ors):.3f} (vs best {ks.mean() - BEST[n]:+.3f})",
                  flush=True)
