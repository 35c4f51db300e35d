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
A real site: maps of four real scenes, queries from each and from places in no map.

Memorizes the kitchen (dev-20), the study room, the tabletop and the stairs (bench/real_scenes.py)
into one site, then localizes every held-out query of each scene and every out-of-map image
(EuRoC drone camera, TUM office) against the site, and each in-map query against its own map
alone. Prints: map-selection accuracy on in-map queries, false accepts on out-of-map ones, pose
recall at 5 cm / 5 deg after selection next to the single-map recall, seconds per query.

  python bench/bench_site.py --data ../shared/data --weights ../shared/weights --out out/site
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_arg import add_device_argument, checked_device  # noqa: E402
from real_scenes import MAPPED, MEMORIZE_OVERRIDES, out_of_map_images, scene_frames  # noqa: E402, E501

from scene_reloc.evaluation import compute_metrics, map_selection, record_query  # noqa: E402
from scene_reloc.precision import no_tf32  # noqa: E402
from scene_reloc.scene_map import load_scene_map  # noqa: E402
from scene_reloc.site import SiteConfig, SiteLocalizer, write_site  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='../shared/data')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--backbone', default='alike-n')
    p.add_argument('--retrieval-model', default='auto')
    p.add_argument('--head', default='region_classifier')
    p.add_argument('--shortlist', type=int, default=SiteConfig.shortlist)
    p.add_argument('--max-maps', type=int, default=SiteConfig.max_maps)
    p.add_argument('--min-inliers', type=int, default=SiteConfig.min_inliers)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--reuse-maps', action='store_true',
                   help='use the maps already in --out when they load (skip memorizing)')
    p.add_argument('--out', default='out/site')
    add_device_argument(p)
    a = p.parse_args()
    device = checked_device(a.device)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    weights = os.path.join(a.weights, f'{a.backbone}.pth')
    maps, queries, memorize_s = [], {}, {}
    for name in MAPPED:
        mem, query = scene_frames(a.data, name)
        path = os.path.join(a.out, f'{name}.map')
        cfg = MemorizeConfig(backbone=a.backbone, backbone_weights=weights, device=device,
                             head=a.head, name=name, retrieval_model=a.retrieval_model,
                             **MEMORIZE_OVERRIDES.get(name, {}))
        if a.reuse_maps and os.path.exists(path):
            memorize_s[name] = load_scene_map(path)[0]['metrics']['train_seconds']
        else:
            memorize_s[name] = memorize(mem, path, cfg, progress=False)['train_seconds']
        maps.append(path)
        queries[name] = query
        print(f'# memorized {name}: {len(mem)} frames, {memorize_s[name]} s', file=sys.stderr)
    site_path = os.path.join(a.out, 'real.site')
    write_site(site_path, maps, SiteConfig(a.shortlist, a.max_maps, a.min_inliers))
    site = SiteLocalizer.from_file(site_path, device=device)
    first = queries['kitchen'][0]
    site.localize(first.load_color(), first.K)            # warm-up
    rows, all_in = {}, []
    for i, name in enumerate(MAPPED):
        recs_site, recs_single, first = [], [], 0
        for f in queries[name]:
            img, pose = f.load_color(), f.load_pose()
            # Retrieval alone (before any verification): is this scene's map ranked first?
            with no_tf32():   # as SiteLocalizer.localize extracts
                order, _ = site.rank_maps(site.extractor.extract(img, 2048))
            first += bool(order) and site.names[order[0]] == name
            res = site.localize(img, f.K)
            if res.map_name != name:       # a pose in another map is no pose in this one
                res.world_from_cam, res.success = None, False
            recs_site.append(record_query(f.stem, res, pose))
            recs_single.append(record_query(f.stem, site.maps[i].localize(img, f.K), pose))
        ms, m1 = compute_metrics(recs_site), compute_metrics(recs_single)
        rows[name] = {'site': {**ms, **map_selection(recs_site, name)}, 'single_map': m1,
                      'retrieval_ranks_it_first': round(first / len(queries[name]), 4),
                      'memorize_seconds': memorize_s[name]}
        all_in += [(name, r) for r in recs_site]
        print(json.dumps({'scene': name, **rows[name]}), flush=True)
    out_recs = []
    for f in out_of_map_images(a.data):
        t0 = time.perf_counter()
        res = site.localize(f.load_color(), f.K)
        rec = record_query(f.stem, res, np.eye(4))
        rec.seconds = time.perf_counter() - t0
        out_recs.append(rec)
    out_m = map_selection(out_recs, None)
    out_m['seconds_per_query_p50'] = round(float(np.median([r.seconds for r in out_recs])), 4)
    out_m['n_queries'] = len(out_recs)
    print(json.dumps({'scene': 'out of map (EuRoC + TUM)', **out_m}), flush=True)
    right = sum(r.map_name == n for n, r in all_in)
    counts = {}
    for n, r in all_in:
        counts.setdefault(n, {}).setdefault(r.map_name or 'none', 0)
        counts[n][r.map_name or 'none'] += 1
    summary = {'in_map_queries': len(all_in),
               'map_selection_accuracy': round(right / len(all_in), 4),
               'out_of_map_queries': len(out_recs), 'false_accepts': out_m['false_accepts'],
               'selection_counts_in_map': counts}
    print(json.dumps(summary), flush=True)
    lines = ['| scene | queries | ranked first by retrieval | answered in the right map | '
             'site recall 5cm/5deg | single-map recall | site s/query p50 | '
             'single s/query p50 |', '|---' * 8 + '|']
    for n in MAPPED:
        s, m = rows[n]['site'], rows[n]['single_map']
        lines.append(f'| {n} | {s["n_queries"]} | {rows[n]["retrieval_ranks_it_first"]:.1%} | '
                     f'{s["map_selection_accuracy"]:.1%} | '
                     f'{s["recall_5cm_5deg"]:.1%} | {m["recall_5cm_5deg"]:.1%} | '
                     f'{s["seconds_per_query_p50"]} | {m["seconds_per_query_p50"]} |')
    lines.append(f'| out of map | {len(out_recs)} | - | {out_m["map_selection_accuracy"]:.1%} '
                 f'(none) | false accepts {out_m["false_accepts"]} | - | '
                 f'{out_m["seconds_per_query_p50"]} | - |')
    md = '\n'.join(lines)
    print('\n' + md)
    with open(os.path.join(a.out, 'results.json'), 'w') as f:
        json.dump({'scenes': rows, 'out_of_map': out_m, 'summary': summary}, f, indent=2)
    with open(os.path.join(a.out, 'results.md'), 'w') as f:
        f.write(md + '\n')


if __name__ == '__main__':
    main()
