# Copyright 2026 The scene_reloc authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
PnP settings compared on the same maps and queries: recall, median and PnP time, paired.

Each map is queried as the node would (``Relocalizer.localize``: correspondences, PnP, the
acceptance gates) once per PnP variant and RANSAC seed; only ``solve_pnp`` is timed. The
first variant is the reference: the last table pools every map and seed query by query
(queries gained / lost, the exact two-sided McNemar p). Choose on ``--queries validation``
(the kitchen frames no protocol memorizes or queries, as bench_validation.py); report a
choice on ``benchmark``.

  python bench/bench_pnp.py --data ../shared/data/7scenes_redkitchen_dev
      --maps out/bench/dev-20-alike-n.map,out/bench/dev-10-alike-n.map
      --variants 'poselib default:trials_mult=3' 'textbook:trials_mult=1' --out out/pnp
"""

import argparse
import copy
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dev import PROTOCOLS, write_results  # noqa: E402
from bench_validation import VALIDATION  # noqa: E402

from scene_reloc.evaluation import (  # noqa: E402
    compute_metrics,
    localize_frames,
    outcome_string,
    pooled_paired_comparison,
)
from scene_reloc.pnp import PnPConfig  # noqa: E402
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder  # noqa: E402
import scene_reloc.relocalizer as relocalizer_module  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402


def parse_variant(text):
    """``'name:key=value,key=value'`` -> (name, {key: value}) for :class:`PnPConfig` fields."""
    name, _, spec = text.partition(':')
    types = {f.name: f.type for f in dataclasses.fields(PnPConfig)}
    kv = {}
    for item in filter(None, spec.split(',')):
        key, _, value = item.partition('=')
        if key == 'seed':
            raise SystemExit(f'--variants {text!r}: RANSAC seeds are --ransac-seeds, the same '
                             'for every variant')
        if key not in types:
            raise SystemExit(f'--variants {text!r}: {key!r} is no PnPConfig field '
                             f'({", ".join(types)})')
        kind = types[key]
        kv[key] = {'int': int, 'float': float}.get(kind, kind)(value)   # str annotations too
    return name, kv


class TimedPnP:
    """Wrap the relocalizer's ``solve_pnp`` and keep its times."""

    def __init__(self):
        self.solve = relocalizer_module.solve_pnp
        self.seconds = []

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.solve(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--maps', required=True, help='comma-separated map files of that scene')
    p.add_argument('--variants', nargs='+', required=True, metavar='NAME:KEY=V,...',
                   help="PnP settings over the map's own; the first is the reference")
    p.add_argument('--queries', default='validation', choices=['validation', 'benchmark'])
    p.add_argument('--ransac-seeds', default='0,1,2', help='RANSAC seeds per variant')
    p.add_argument('--out', default='out/pnp')
    a = p.parse_args()
    variants = [parse_variant(v) for v in a.variants]
    seeds = [int(s) for s in a.ransac_seeds.split(',')]
    folder = PosedFrameFolder(a.data)
    stems = VALIDATION if a.queries == 'validation' else \
        parse_frame_list(PROTOCOLS['dev-20'][1], folder)
    queries = folder.frames(stems)
    os.makedirs(a.out, exist_ok=True)
    timer = TimedPnP()
    relocalizer_module.solve_pnp = timer
    rows, outcomes = [], {name: {} for name, _ in variants}
    for path in a.maps.split(','):
        reloc = Relocalizer.from_file(path, device='cpu')
        base = copy.deepcopy(reloc.config)
        for name, kv in variants:
            seconds, records = [], []
            for seed in seeds:
                reloc.config = copy.deepcopy(base)
                reloc.config.pnp = dataclasses.replace(base.pnp, **kv, seed=seed)
                timer.seconds = []
                recs = localize_frames(reloc.localize, queries)
                seconds += timer.seconds[1:]   # the first query is localize_frames' warm-up
                records += recs
                outcomes[name][f'{os.path.basename(path)} seed {seed}'] = outcome_string(recs)
            m = compute_metrics(records, pnp_s_p50=round(float(np.median(seconds)), 4),
                                pnp_s_p90=round(float(np.percentile(seconds, 90)), 4))
            rows.append((f'{os.path.basename(path)} | {name}', m))
            print(f'{rows[-1][0]}: recall {m["recall_5cm_5deg"]:.3f}, '
                  f'PnP p50 {m["pnp_s_p50"]} s', flush=True)
    md = (f'{a.queries} queries ({len(queries)}), RANSAC seeds {a.ransac_seeds}\n\n'
          '| map | variant | recall 5cm/5deg | median cm | PnP s p50 | PnP s p90 |\n'
          '|---|---|---|---|---|---|\n')
    md += '\n'.join(f'| {label} | {m["recall_5cm_5deg"]:.3f} | '
                    f'{m["median_translation_cm"]} | {m["pnp_s_p50"]} | {m["pnp_s_p90"]} |'
                    for label, m in rows)
    ref_name = variants[0][0]
    md += ('\n\nPooled over maps and seeds, query by query, against '
           f'{ref_name}:\n\n| variant | successes | {ref_name} | gained / lost | p |\n'
           '|---|---|---|---|---|\n')
    for name, _ in variants[1:]:
        c = pooled_paired_comparison(outcomes[ref_name], outcomes[name])
        md += (f'| {name} | {c["successes"]} / {c["n"]} | {c["reference_successes"]} | '
               f'+{c["gained"]} / -{c["lost"]} | {c["p_value"]} |\n')
    write_results(a.out, f'pnp_{a.queries}', md, rows)


if __name__ == '__main__':
    main()
