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
The demo: synthetic scene -> memorize 20 frames -> localize 50 held-out frames -> report.

Needs no data and no weights (the handcrafted backbone). Run with ``make demo``.
"""

import argparse
import json
import os
import sys
import time

from scene_reloc_training.cli import main as cli


def run(args):
    print(f'$ scene-reloc {" ".join(args)}', flush=True)
    if cli(args) != 0:
        sys.exit(f'demo step failed: scene-reloc {args[0]}')


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--out', default='out/demo', help='where the scene, map and report go')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    scene, scene_map = os.path.join(a.out, 'scene'), os.path.join(a.out, 'scene.map')
    report, metrics = os.path.join(a.out, 'report'), os.path.join(a.out, 'metrics.json')
    t0 = time.time()
    run(['make-synthetic', '--out', scene, '--seed', str(a.seed), '--memorize', '20',
         '--query', '50', '--query-lighting'])
    run(['memorize', '--data', scene, '--frames', os.path.join(scene, 'memorize.txt'),
         '--out', scene_map])
    run(['evaluate', '--map', scene_map, '--data', scene, '--frames',
         os.path.join(scene, 'query.txt'), '--json', metrics, '--report', report])
    m = json.load(open(metrics))
    print(f'\ndemo done in {time.time() - t0:.0f} s: {m["n_localized"]}/{m["n_queries"]} '
          f'localized, median {m["median_translation_cm"]} cm / {m["median_rotation_deg"]} deg, '
          f'recall 5 cm/5 deg {m["recall_5cm_5deg"]:.0%}, {m["seconds_per_query_p50"]} s per '
          f'query, map {m["map_megabytes"]} MB')
    print(f'report: {os.path.abspath(os.path.join(report, "index.html"))} (plots in '
          f'{os.path.abspath(os.path.join(report, "report.png"))})')


if __name__ == '__main__':
    main()
