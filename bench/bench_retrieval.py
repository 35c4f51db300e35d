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
Retrieval benchmark: recall@1/5/10 of global descriptors, with and without VOP re-ranking.

Databases pool the memorized frames of several scenes; a query's hit is a database frame of its
own scene that sees more than 0.3 of it (depth + poses, occlusion-tested). Two pools:
- held-out synthetic rooms: the corpus' test scenes (never trained on), memorize.txt frames
  as the database, query.txt frames (changed lighting) as queries;
- real scenes of ../shared/data (kitchen, study room, tabletop, stairs; bench/real_scenes.py).
Methods: mean pooling and the built-in untrained GeM, plus every --models NAME=PATH (files from
scene-reloc train-retrieval: SARE-trained NetVLAD / GeM, the k-means-only "untrained" VLAD made
with --steps 0). With --scaling: search latency and memory against database size (faiss, random
unit vectors, 10^3 to 10^6).

  python bench/bench_retrieval.py --data ../shared/data --corpus out/corpus/corpus.json
      --weights ../shared/weights --models sare-netvlad=out/retrieval/sare-netvlad.safetensors
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_arg import add_device_argument, checked_device  # noqa: E402
from real_scenes import MAPPED, scene_frames  # noqa: E402

from scene_reloc.backbones import FeatureExtractor, RUNTIMES  # noqa: E402
from scene_reloc.posed_frames import PosedFrameFolder  # noqa: E402
from scene_reloc.retrieval.database import untrained_model  # noqa: E402
from scene_reloc.retrieval.index import GlobalIndex  # noqa: E402
from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel  # noqa: E402
from scene_reloc.retrieval.overlap import frame_overlap  # noqa: E402
from scene_reloc.retrieval.voting import overlap_votes  # noqa: E402
from scene_reloc_training.learn.corpus import corpus_scenes  # noqa: E402
from scene_reloc_training.learn.retrieval_data import scene_frame_stems  # noqa: E402

KS = (1, 5, 10)


def read_pool(scenes, extractor):
    """
    Read a pool: [(name, memorized frames, query frames)].

    :return: database grids, query grids, hit matrix, each query's scene name.
    """
    db, qs = [], []
    for s, (_name, mem, query) in enumerate(tqdm(scenes, desc='reading', unit='scene')):
        for frames, bucket in ((mem, db), (query, qs)):
            for f in frames:
                bucket.append((s, extractor.extract_grid(f.load_color()).grid_desc.cpu(),
                               f.load_depth(), f.K, f.load_pose()))
    hits = np.zeros((len(qs), len(db)), bool)
    for i, (sq, _, dq, Kq, Tq) in enumerate(qs):
        for j, (sd, _, dd, Kd, Td) in enumerate(db):
            if sq == sd:
                hits[i, j] = frame_overlap(dq, Kq, Tq, dd, Kd, Td, stride=16) > 0.3
    return ([g for _, g, *_ in db], [g for _, g, *_ in qs], hits,
            [scenes[s][0] for s, *_ in qs])


def recall_at(rank, hits, ks=KS):
    """rank: (Q, >=max k) database indices, best first; queries without any hit are skipped."""
    has = hits.any(1)
    return {f'recall@{k}': round(float(np.mean([hits[i, rank[i, :k]].any()
                                                for i in np.flatnonzero(has)])), 4)
            for k in ks}


def evaluate(model, db_grids, q_grids, hits, shortlist, q_scenes=None):
    with torch.inference_mode():
        db = [model.describe(g) for g in db_grids]
        t0 = time.perf_counter()
        qd = [model.describe(g) for g in q_grids]
        describe_s = (time.perf_counter() - t0) / max(len(q_grids), 1)
    index = GlobalIndex(np.stack([d for d, _ in db]))
    _, rank = index.search(np.stack([d for d, _ in qd]), shortlist)
    out = {'global': recall_at(rank, hits)}
    t0 = time.perf_counter()
    reranked = []
    for i, (_, patches) in enumerate(qd):
        votes, _ = overlap_votes(patches, [db[j][1] for j in rank[i]])
        reranked.append(rank[i][np.argsort(-votes, kind='stable')])
    vop_s = (time.perf_counter() - t0) / max(len(qd), 1)
    out['vop'] = recall_at(np.array(reranked), hits)
    for name in sorted(set(q_scenes or ())):   # each query scene alone (leave-one-out models)
        rows = np.array([s == name for s in q_scenes])
        out.setdefault('per_scene', {})[name] = {
            'global': recall_at(rank[rows], hits[rows]),
            'vop': recall_at(np.array(reranked)[rows], hits[rows])}
    out['describe_ms'] = round(describe_s * 1000, 2)
    out['vop_ms'] = round(vop_s * 1000, 2)
    out['queries_with_a_hit'] = int(hits.any(1).sum())
    return out


def scaling(dim=256, sizes=(1_000, 10_000, 100_000, 1_000_000), queries=200, k=30):
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = x[rng.choice(n, queries)] + 0.05 * rng.standard_normal((queries, dim),
                                                                    dtype=np.float32)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        index = GlobalIndex(x)
        build = time.perf_counter() - t0
        exact_top1 = None if index.exact else np.argmax(q @ x.T, axis=1)
        for nprobe in [None] if index.exact else [16, 64, 256]:
            if nprobe:
                index.index.nprobe = nprobe
            times, found = [], []
            for v in q:
                t0 = time.perf_counter()
                found.append(index.search(v[None], k)[1][0, 0])
                times.append(time.perf_counter() - t0)
            # Approximate index: how often its best frame is the exact best frame.
            agree = 1.0 if index.exact else float(np.mean(np.array(found) == exact_top1))
            rows.append({'frames': n, 'index': 'flat' if index.exact else f'ivf nprobe {nprobe}',
                         'top1_agrees_with_exact': round(agree, 3), 'build_s': round(build, 2),
                         'search_ms_p50': round(1000 * float(np.median(times)), 3),
                         'search_ms_p95': round(1000 * float(np.percentile(times, 95)), 3),
                         'descriptors_mb': round(x.nbytes / 1e6, 1),
                         'peak_rss_growth_mb': round((resource.getrusage(
                             resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)})
            print(json.dumps(rows[-1]), flush=True)
        del index, x
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='../shared/data (the real pool)')
    p.add_argument('--corpus', help='corpus.json (its test scenes are the synthetic pool)')
    p.add_argument('--weights', help='folder with the backbone weights')
    p.add_argument('--backbone', default='alike-n')
    p.add_argument('--models', nargs='*', default=[], metavar='NAME=PATH')
    p.add_argument('--shortlist', type=int, default=30)
    p.add_argument('--scaling', action='store_true', help='latency / memory against size')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runtime', default='auto', choices=RUNTIMES, help='backbone runtime')
    p.add_argument('--out', default='out/retrieval_bench')
    add_device_argument(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    results = {}
    if a.scaling:
        results['scaling'] = scaling()
    weights = os.path.join(a.weights, f'{a.backbone}.pth') if a.weights else None
    ex = FeatureExtractor(a.backbone, weights, checked_device(a.device), a.runtime)
    models = {'mean': RetrievalModel(RetrievalConfig(aggregator='mean', dim=0, adapter=False,
                                                     local_dim=ex.descriptor_dim)).eval(),
              'gem (untrained)': untrained_model(ex.descriptor_dim)}
    for spec in a.models:
        name, path = spec.split('=', 1)
        models[name] = RetrievalModel.load(path)[0]
    pools = {}
    if a.corpus:
        scenes = []
        for root in corpus_scenes(a.corpus, 'test'):
            folder = PosedFrameFolder(root)
            stems = scene_frame_stems(folder, root)
            mem = [s for s in stems if s in set(open(os.path.join(root, 'memorize.txt'))
                                                .read().split())]
            scenes.append((os.path.basename(root), folder.frames(mem),
                           folder.frames([s for s in stems if s not in mem])))
        pools['held-out synthetic'] = scenes
    if a.data:
        pools['real (4 scenes)'] = [(n, *scene_frames(a.data, n)) for n in MAPPED]
    table = ['| pool | method | R@1 | R@5 | R@10 | R@1 +VOP | R@5 +VOP | R@10 +VOP | '
             'describe ms | VOP ms |', '|---' * 10 + '|']
    for pool, scenes in pools.items():
        db, qs, hits, q_scenes = read_pool(scenes, ex)
        for name, model in models.items():
            r = evaluate(model, db, qs, hits, a.shortlist, q_scenes)
            r.update(pool=pool, method=name, database=len(db), queries=len(qs))
            print(json.dumps(r), flush=True)
            results.setdefault('recall', []).append(r)
            g, v = r['global'], r['vop']
            table.append(f'| {pool} ({len(db)} db / {r["queries_with_a_hit"]} q) | {name} | '
                         + ' | '.join(f'{g[f"recall@{k}"]:.3f}' for k in KS) + ' | '
                         + ' | '.join(f'{v[f"recall@{k}"]:.3f}' for k in KS)
                         + f' | {r["describe_ms"]} | {r["vop_ms"]} |')
    per_scene = ['| pool | method | query scene | R@1 | R@5 | R@1 +VOP |', '|---' * 6 + '|']
    for r in results.get('recall', []):
        for scene, v in r.get('per_scene', {}).items():
            per_scene.append(f'| {r["pool"]} | {r["method"]} | {scene} | '
                             f'{v["global"]["recall@1"]:.3f} | {v["global"]["recall@5"]:.3f} | '
                             f'{v["vop"]["recall@1"]:.3f} |')
    md = '\n'.join(table) + '\n\nEach query scene alone:\n\n' + '\n'.join(per_scene)
    print('\n' + md)
    with open(os.path.join(a.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(a.out, 'results.md'), 'w') as f:
        f.write(md + '\n')


if __name__ == '__main__':
    main()
