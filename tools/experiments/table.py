"""Print the fusion/threshold table of cached runs: HOWS=otsu,gmm-sqrt KEEP=... PAIRS=... table.py OPTS [TAIZHOU_OPTS]."""
import os
import sys

sys.path.insert(0,'tools/experiments')
from fuse import *

HOWS=os.environ['HOWS'].split(',')
KEEP=os.environ.get('KEEP','hn,hn+irmad med,hn+irmad+cva med,irmad,cva').split(',')
spec = sys.argv[1] if len(sys.argv) > 1 else ''
opts = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
tzopts = dict(kv.split("=", 1) for kv in (sys.argv[2] if len(sys.argv) > 2 else spec).split(",") if kv)
for n in (os.environ.get('PAIRS') or 'taizhou,salinasA_pair,salinasA_pair_hard').split(','):
    o = tzopts if n == 'taizhou' else opts
    pair, ref = get_pair(n); c = classic(n)
    seeds=[s for s in range(5) if key(n,s,o).exists()]
    per = [fusions(n, m, c, pair.valid) for m, _ in hn_intensity(n, seeds, o, 1)]
    for lab in KEEP:
        for how in HOWS:
            report(f"{lab} {how}", n, [p[lab] for p in per], how)
