"""Fusion variants of HyperNet's normalised root-MSE with classic evidence (cached runs)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyse import *  # noqa


def robz(x, v):
    med = np.nanmedian(x[v]); mad = np.nanmedian(np.abs(x[v] - med)) * 1.4826
    return (x - med) / mad


def box(x, v, r):
    """Mean over the valid pixels of a (2r+1)^2 window."""
    xx = np.where(v, np.nan_to_num(x), 0.0)
    vv = v.astype(np.float64)
    def win(a):
        p = np.pad(a, r)
        c = np.cumsum(np.cumsum(p, 0), 1)
        c = np.pad(c, ((1, 0), (1, 0)))
        k = 2 * r + 1
        return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    out = win(xx) / np.maximum(win(vv), 1)
    return np.where(v, out, np.nan)


def fusions(name, hn, c, v):
    out = {}
    out["hn"] = hn
    out["hn+irmad med"] = 0.5 * (hn + medn(c["irmad"], v))
    out["hn+cva med"] = 0.5 * (hn + medn(c["cva"], v))
    out["hn+irmad+cva med"] = (hn + medn(c["irmad"], v) + medn(c["cva"], v)) / 3
    out["hn*irmad geo"] = np.sqrt(hn * medn(c["irmad"], v))
    out["hn*cva geo"] = np.sqrt(hn * medn(c["cva"], v))
    out["hn*irmad*cva geo"] = np.cbrt(hn * medn(c["irmad"], v) * medn(c["cva"], v))
    f3 = (hn + medn(c["irmad"], v) + medn(c["cva"], v)) / 3
    out["f3 box3"] = box(f3, v, 1)
    out["f3 box5"] = box(f3, v, 2)
    out["hn+box3(irmad+cva)"] = (hn + box(medn(c["irmad"], v), v, 1) + box(medn(c["cva"], v), v, 1)) / 3
    out["f2 box3"] = box(0.5 * (hn + medn(c["irmad"], v)), v, 1)
    out["irmad box3"] = box(medn(c["irmad"], v), v, 1)
    out["cva box3"] = box(medn(c["cva"], v), v, 1)
    out["irmad"] = medn(c["irmad"], v)
    out["cva"] = medn(c["cva"], v)
    out["hn+irmad robz"] = 0.5 * (robz(hn, v) + robz(c["irmad"], v))
    out["hn+cva robz"] = 0.5 * (robz(hn, v) + robz(c["cva"], v))
    return out


HOWS = tuple(__import__("os").environ.get("HOWS", "otsu,otsu-log,otsu-logq1,otsu-logq10").split(","))
SKIP = ("robz",)

if __name__ == "__main__":
    names = sys.argv[1].split(",")
    opts = dict(kv.split("=", 1) for kv in sys.argv[2].split(",") if kv) if len(sys.argv) > 2 else {}
    members = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    for n in names:
        pair, ref = get_pair(n)
        c = classic(n)
        seeds = [s for s in range(5) if all(key(n, s * members + k, opts).exists() for k in range(members))]
        per = [fusions(n, m, c, pair.valid) for m, _ in hn_intensity(n, seeds, opts, members)]
        for lab in [l for l in per[0] if not any(k in l for k in SKIP)]:
            for how in HOWS:
                report(f"{lab} {how} ({len(seeds)}s)", n, [p[lab] for p in per], how)
