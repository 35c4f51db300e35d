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
Real-data and synthetic benchmark of both scene models, next to the SIFT peer.

Protocols on the 7-Scenes redkitchen dev folder (../shared/data/README.md):
  dev-20  memorize 0:700:35,  query 15:700:10
  dev-10  memorize 0:700:70,  query 15:700:10
  dev-100 memorize 0:700:7,   query 15:700:10
plus a synthetic row (memorize 20 frames, query 50 under changed lighting) that needs no data.

Prints one metrics JSON per row (region classifier, the same with plain SRC leaf centres, the
landmark detector (SLD), the SIFT peer; all in the same run on the same frames; ``--heads``
picks the scene models), then a Markdown table; writes both under --out.

  python bench/bench_dev.py --data ../shared/data/7scenes_redkitchen_dev
      --weights ../shared/weights --out out/bench
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_arg import start_run  # noqa: E402
from sift_peer import SiftPeer  # noqa: E402

from scene_reloc.evaluation import compute_metrics, localize_frames  # noqa: E402
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402

PROTOCOLS = {
    'dev-20': ('0:700:35', '15:700:10'),
    'dev-10': ('0:700:70', '15:700:10'),
    'dev-100': ('0:700:7', '15:700:10'),
}


def protocol_frames(data, protocol):
    """(memorized frames, query frames) of a protocol on the kitchen folder ``data``."""
    folder = PosedFrameFolder(data)
    mem_spec, q_spec = PROTOCOLS[protocol]
    return (folder.frames(parse_frame_list(mem_spec, folder)),
            folder.frames(parse_frame_list(q_spec, folder)))


def run_ours(name, mem, queries, cfg, out_dir, plain_src=True):
    path = os.path.join(out_dir, f'{name.replace("/", "_")}-{cfg.backbone}.map')
    summary = memorize(mem, path, cfg, progress=False)
    reloc = Relocalizer.from_file(path, device=cfg.device)
    rows = [(f'{name} | ours ({cfg.backbone})', compute_metrics(
        localize_frames(reloc.localize, queries), train_seconds=summary['train_seconds'],
        map_megabytes=summary['map_megabytes']))]
    if plain_src:
        # Plain SRC: every grid cell to its most likely leaf centre. Leaf centres are a few
        # centimetres off, so RANSAC needs a looser threshold than for matched points.
        reloc.config.refinement = 'none'
        reloc.config.pnp.max_reproj_error = 12.0
        reloc.config.max_reprojection_error = 10.0
        rows.append((f'{name} | SRC leaf centres ({cfg.backbone})', compute_metrics(
            localize_frames(reloc.localize, queries), train_seconds=summary['train_seconds'],
            map_megabytes=summary['map_megabytes'])))
    return rows


def run_landmarks(name, mem, queries, cfg, out_dir):
    """Memorize and evaluate the landmark detector (SLD) on the same frames."""
    path = os.path.join(out_dir, f'{name.replace("/", "_")}-{cfg.backbone}-sld.map')
    summary = memorize(mem, path, cfg, progress=False)
    reloc = Relocalizer.from_file(path, device=cfg.device)
    return [(f'{name} | SLD landmarks ({cfg.backbone})', compute_metrics(
        localize_frames(reloc.localize, queries), train_seconds=summary['train_seconds'],
        map_megabytes=summary['map_megabytes']))]


def run_peer(name, mem, queries):
    peer = SiftPeer()
    train = peer.memorize(mem)
    return [(f'{name} | SIFT peer', compute_metrics(
        localize_frames(peer.localize, queries), train_seconds=round(train, 2),
        map_megabytes=round(peer.map_megabytes, 3)))]


def table(rows):
    head = ('| protocol / method | median cm | median deg | rotation bias deg | '
            'recall 5cm/5deg | recall 2cm/2deg | memorize s | s/query p50 | s/query p95 | '
            'map MB |\n' + '|---' * 10 + '|\n')
    lines = []
    for label, m in rows:
        label = label.replace(' | ', ', ')
        lines.append(f'| {label} | {m["median_translation_cm"]} | {m["median_rotation_deg"]} | '
                     f'{m.get("rotation_bias_deg")} | '
                     f'{m["recall_5cm_5deg"]:.1%} | {m["recall_2cm_2deg"]:.1%} | '
                     f'{m.get("train_seconds")} | {m["seconds_per_query_p50"]} | '
                     f'{m["seconds_per_query_p95"]} | {m.get("map_megabytes")} |')
    return head + '\n'.join(lines)


def write_results(out_dir, stem, md, rows):
    """Print the Markdown table; write it and the rows' metrics JSON as ``out_dir/stem.*``."""
    print('\n' + md)
    with open(os.path.join(out_dir, f'{stem}.md'), 'w') as f:
        f.write(md + '\n')
    with open(os.path.join(out_dir, f'{stem}.json'), 'w') as f:
        json.dump([{'row': label, **m} for label, m in rows], f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='7-Scenes redkitchen dev folder (flat layout)')
    p.add_argument('--weights', help='folder with alike-n.pth')
    p.add_argument('--backbone', default='alike-n')
    p.add_argument('--protocols', default='dev-20,dev-10,dev-100')
    p.add_argument('--synthetic-only', action='store_true', help='only the synthetic row')
    p.add_argument('--no-peer', action='store_true', help='skip the SIFT peer')
    p.add_argument('--heads', default='region,landmark',
                   help='scene models to run: region (SRC), landmark (SLD), or both')
    p.add_argument('--threads', type=int, default=2, help='CPU threads (torch and OpenCV)')
    p.add_argument('--device', default='cpu',
                   help='cpu | cuda | auto: where our models memorize and query (the peer is CPU)')
    p.add_argument('--out', default='out/bench')
    a = p.parse_args()
    start_run(a)
    weights = os.path.join(a.weights, f'{a.backbone}.pth') if a.weights else None
    rows = []

    def emit(new):
        for label, m in new:
            print(json.dumps({'row': label, **m}), flush=True)
        rows.extend(new)

    # Synthetic row: reproducible without any data.
    syn = os.path.join(tempfile.mkdtemp(prefix='bench-syn-'), 'scene')
    mem_s, q_s = write_synthetic_scene(syn, seed=0, num_memorize=20, num_query=50,
                                       query_lighting=True)
    folder = PosedFrameFolder(syn)
    mem, queries = folder.frames(mem_s), folder.frames(q_s)
    heads = a.heads.split(',')
    have_weights = bool(weights and os.path.exists(weights))
    if 'region' in heads:
        emit(run_ours('synthetic-20/50', mem, queries, MemorizeConfig(device=a.device), a.out))
        if have_weights:
            emit(run_ours('synthetic-20/50', mem, queries, MemorizeConfig(
                backbone=a.backbone, backbone_weights=weights, device=a.device), a.out, False))
    if 'landmark' in heads:
        emit(run_landmarks('synthetic-20/50', mem, queries, MemorizeConfig(
            device=a.device, head='landmark_detector'), a.out))
        if have_weights:
            emit(run_landmarks('synthetic-20/50', mem, queries, MemorizeConfig(
                backbone=a.backbone, backbone_weights=weights, device=a.device,
                head='landmark_detector'), a.out))
    if not a.no_peer:
        emit(run_peer('synthetic-20/50', mem, queries))

    if not a.synthetic_only:
        if not a.data or not weights or not os.path.exists(weights):
            sys.exit('the real-data rows need --data and --weights (with '
                     f'{a.backbone}.pth); or pass --synthetic-only')
        for name in a.protocols.split(','):
            mem, queries = protocol_frames(a.data, name)
            cfg = MemorizeConfig(backbone=a.backbone, backbone_weights=weights, device=a.device)
            t0 = time.time()
            if 'region' in heads:
                emit(run_ours(name, mem, queries, cfg, a.out))
            if 'landmark' in heads:
                cfg.head = 'landmark_detector'
                emit(run_landmarks(name, mem, queries, cfg, a.out))
            print(f'# {name}: ours done in {time.time() - t0:.0f} s', file=sys.stderr)
            if not a.no_peer:
                emit(run_peer(name, mem, queries))
    write_results(a.out, 'results', table(rows), rows)


if __name__ == '__main__':
    main()
