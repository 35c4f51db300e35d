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
Few-shot memorization: recall and median error against head-training steps and seconds.

For (random start, meta-learned start) x (scratch backbone, ALIKE-n, our pretrained backbone),
the region classifier is trained on each scene for several step budgets (each a full one-cycle
run, as ``memorize --iterations N`` would), then localizes the scene's queries. Scenes: held-out
(test split) synthetic scenes of the corpus, with --data 7-Scenes dev-20 / dev-10, with
--real-data the SUN3D study room and the tabletop. The meta-learned starts are made here with
``scene-reloc meta-train`` on the corpus' train scenes unless OUT already holds them (or given
with --meta-init). Starts: random, meta, and either with its level-1 rows imprinted from the
region means (``imprint``, ``meta+imprint``). With --leave-one-out each real scene of the corpus
(``make-corpus --add``) is held out of meta-training in turn and evaluated with its own start.
Writes OUT/fewshot.json (rows, and which scenes trained each start), OUT/fewshot.md and
OUT/fewshot.png.

  python bench/bench_fewshot.py --corpus out/corpus/corpus.json
      --pretrained out/pretrain/backbone.pth --weights ../shared/weights
      --data ../shared/data/7scenes_redkitchen_dev --out out/fewshot
  python bench/bench_fewshot.py --corpus out/corpus_real/corpus.json --backbones alike
      --weights ../shared/weights --data ../shared/data/7scenes_redkitchen_dev
      --real-data ../shared/data --leave-one-out --out out/fewshot_loo
      [--backbones alike,pretrained --pretrained 'out/pt-without-{held_out}/backbone.pth']
"""

import argparse
import json
import os
import subprocess
import sys
import time

from device_arg import add_device_argument, checked_device
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.evaluation import compute_metrics, localize_frames, outcome_string
from scene_reloc.precision import no_tf32
from scene_reloc.relocalizer import Relocalizer
from scene_reloc.retrieval.database import build_database
from scene_reloc_training.learn.corpus import corpus_scenes
from scene_reloc_training.learn.pretrain_data import scene_frames
from scene_reloc_training.memorize.head_init import load_head_init
from scene_reloc_training.memorize.memorize_scene import (
    MemorizeConfig,
    read_frames,
    region_material,
    region_tensors,
    write_map,
)
from scene_reloc_training.memorize.region_training import train_region_head
from scene_reloc_training.memorize.retrieval_db import resolve_retrieval_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_scenes import MEMORIZE_OVERRIDES  # noqa: E402
from real_scenes import scene_frames as real_scene_frames

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')
DEV = {'dev-20': ('0:700:35', '15:700:10'), 'dev-10': ('0:700:70', '15:700:10')}


def backbones(a):
    """Name -> ALIKE-n weights file."""
    os.makedirs(a.out, exist_ok=True)
    scratch = os.path.join(a.out, 'scratch-alike-n.pth')
    if not os.path.exists(scratch):
        torch.manual_seed(0)
        torch.save(AlikeNet(*ALIKE_CONFIGS['alike-n']).state_dict(), scratch)
    out = {'scratch': scratch, 'alike': os.path.join(a.weights, 'alike-n.pth'),
           'pretrained': a.pretrained}
    return {k: v for k, v in out.items() if k in a.backbones.split(',')}


def meta_init(a, name, weights, held_out=None):
    """
    Return (path, seconds, training scene names) of a backbone's meta-learned start.

    The start is made unless OUT holds it.

    ``held_out``: a corpus scene that meta-training must not see (leave-one-scene-out).
    """
    suffix = f'-without-{held_out}' if held_out else ''
    path = os.path.join(a.out, f'meta-{name}{suffix}.safetensors')
    if not os.path.exists(path):
        subprocess.run([SCRIPT, 'meta-train', '--corpus', a.corpus, '--backbone', 'alike-n',
                        '--backbone-weights', weights, '--out', path, '--device', a.device,
                        '--outer-steps', str(a.outer_steps), '--inner-steps',
                        str(a.inner_steps)] + (['--hold-out', held_out] if held_out else []),
                       check=True)
    with open(path + '.json') as f:
        info = json.load(f)
    return path, info['history'][-1]['seconds'], [os.path.basename(p) for p in
                                                   info['scene_folders']]


# Real scenes of --real-data / --data evaluated when their corpus scene is left out.
LEAVE_OUT = {'7scenes_redkitchen_dev': ('dev-20', 'dev-10'), 'sun3d_studyroom_f1': ('studyroom',),
             'tabletop_rgbd': ('tabletop',)}


def leave_one_out(a, bbs):
    """Each real corpus scene held out in turn: meta-train without it, then evaluate it."""
    with open(a.corpus) as f:
        real = [s['name'] for s in json.load(f)['scenes'] if 'real' in s]
    todo = [n for n in real if n in LEAVE_OUT]
    if not todo:
        raise SystemExit(f'{a.corpus} holds none of the real scenes {", ".join(LEAVE_OUT)}: '
                         'add them with scene-reloc make-corpus --out DIR --add ...')
    rows, trained = [], {}
    evaluated = scenes(a)
    for held in todo:
        for bb, w in bbs.items():
            w = w.format(held_out=held)   # a backbone pretrained without the held-out scene
            if not os.path.exists(w):
                raise SystemExit(f'{w}: no such backbone (pretrain it with --hold-out {held})')
            path, seconds, folders = meta_init(a, bb, w, held)
            trained[f'{bb} without {held}'] = {'seconds': seconds, 'scenes': folders}
            assert held not in folders
            for scene in evaluated:
                if scene[0] in LEAVE_OUT[held]:
                    rows += run_scene(a, scene, bb, w, path)
    return rows, trained


def scenes(a):
    """(name, memorized frames, queries, memorize overrides) of every evaluated scene."""
    out = [] if not a.corpus else [
        (os.path.basename(r), scene_frames(r, 'memorize.txt'), scene_frames(r, 'query.txt'), {})
        for r in corpus_scenes(a.corpus, 'test')[:a.test_scenes]]
    if a.data:
        validation = None
        if a.kitchen_queries == 'validation':   # choose on these, report on the benchmark's
            from bench_validation import VALIDATION
            validation = os.path.join(a.out, 'kitchen-validation.txt')
            os.makedirs(a.out, exist_ok=True)
            with open(validation, 'w') as f:
                f.write('\n'.join(VALIDATION) + '\n')
        for name, (mem, query) in DEV.items():
            out.append((name, scene_frames(a.data, mem),
                        scene_frames(a.data, validation or query), {}))
    if a.real_data:
        for name in ('studyroom', 'tabletop'):
            mem, query = real_scene_frames(a.real_data, name)
            out.append((name, mem, query, MEMORIZE_OVERRIDES.get(name, {})))
    return out


def start_state(start, meta_path):
    """(head state or None, imprint?) of a start named random, meta, imprint or meta+imprint."""
    meta = start in ('meta', 'meta+imprint')
    return (load_head_init(meta_path) if meta else None), start.endswith('imprint')


@no_tf32()   # its maps are memorized and queried as memorize and the relocalizer do
def run_scene(a, scene, bb, weights, init_path):
    name, mem, queries, overrides = scene
    cfg = MemorizeConfig(backbone='alike-n', backbone_weights=weights, device=a.device,
                         seed=a.seed, **overrides)
    ex = FeatureExtractor('alike-n', weights, a.device)
    t0 = time.perf_counter()
    images, coords, feats, _ = read_frames(mem, ex, cfg, False)
    material = region_material(images, coords, feats, ex, cfg, False)
    buffer_s = time.perf_counter() - t0
    retrieval, retrieval_ref = resolve_retrieval_model(cfg.retrieval_model, cfg.backbone,
                                                       ex.weights_sha256, ex.descriptor_dim)
    database = build_database(retrieval, [f.grid_desc.cpu() for f in feats],
                              [f.load_pose() for f in mem])
    rows = []
    for init in a.starts.split(','):
        state, imprint = start_state(init, init_path)
        for steps in [int(s) for s in a.budgets.split(',')]:
            t1 = time.perf_counter()
            model, _ = train_region_head(material['buffer'], material['head_cfg'], steps,
                                         cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed,
                                         a.device, progress=False, init_state=state,
                                         precision=cfg.precision, imprint=imprint)
            train_s = time.perf_counter() - t1
            path = os.path.join(a.out, 'maps', f'{name}-{bb}-{init}-{steps}.map')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_map(path, region_tensors(material, model) | database, material['head_cfg'],
                      {'train_seconds': round(buffer_s + train_s, 2)}, ex, cfg, mem, '',
                      retrieval_ref)
            records = localize_frames(Relocalizer.from_file(path, weights, a.device).localize,
                                      queries)
            m = compute_metrics(records)
            rows.append({'scene': name, 'backbone': bb, 'init': init, 'steps': steps,
                         'seed': a.seed,
                         'head_seconds': round(train_s, 2), 'buffer_seconds': round(buffer_s, 2),
                         'recall_5cm_5deg': m['recall_5cm_5deg'],
                         'median_cm': m['median_translation_cm'],
                         'median_deg': m['median_rotation_deg'],
                         # per query, in order: for paired comparisons (bench_fewshot_paired.py)
                         'within_5cm_5deg': outcome_string(records)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows):
    """Per scene, backbone and start: the random start's final recall, steps to reach it."""
    out = []
    for key in sorted({(r['scene'], r['backbone']) for r in rows}, key=str):
        rr = [r for r in rows if (r['scene'], r['backbone']) == key]
        final = max((r for r in rr if r['init'] == 'random'), key=lambda r: r['steps'])
        for init in dict.fromkeys(r['init'] for r in rr):
            mine = [r for r in rr if r['init'] == init]
            reach = [r['steps'] for r in mine if r['recall_5cm_5deg'] >=
                     final['recall_5cm_5deg'] and final['recall_5cm_5deg'] > 0]
            last = max(mine, key=lambda r: r['steps'])
            out.append({'scene': key[0], 'backbone': key[1], 'init': init,
                        'random_final_steps': final['steps'],
                        'random_final_recall': final['recall_5cm_5deg'],
                        'random_final_median_cm': final['median_cm'],
                        'final_recall': last['recall_5cm_5deg'],
                        'final_median_cm': last['median_cm'],
                        'steps_to_random_final': min(reach) if reach else None})
    return out


def table(rows, summary):
    """Markdown: recall (median cm) per step budget, one line per start."""
    budgets = sorted({r['steps'] for r in rows})
    head = '| scene | backbone | start | ' + ' | '.join(f'{b} steps' for b in budgets)
    lines = [head + " | steps to the random start's final recall |",
             '|---|---|---|' + '---|' * len(budgets) + '---|']
    for s in summary:
        cells = []
        for b in budgets:
            r = next(r for r in rows if (r['scene'], r['backbone'], r['init'], r['steps'])
                     == (s['scene'], s['backbone'], s['init'], b))
            med = f"{r['median_cm']:.2f} cm" if r['median_cm'] is not None else 'no pose'
            cells.append(f"{r['recall_5cm_5deg']:.3f} ({med})")
        reach = s['steps_to_random_final']
        if reach is None:
            reach = 'not reached' if s['random_final_recall'] > 0 else 'n/a'
        lines.append(f"| {s['scene']} | {s['backbone']} | {s['init']} | " + ' | '.join(cells)
                     + f' | {reach} |')
    return lines


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r['scene'] for r in rows))
    fig, axes = plt.subplots(len(names), 3, figsize=(14, 3.0 * len(names)), squeeze=False)
    colours = {'scratch': 'tab:grey', 'alike': 'tab:blue', 'pretrained': 'tab:green'}
    for i, name in enumerate(names):
        for bb in colours:
            for init, ls in (('random', '--'), ('meta', '-'), ('imprint', ':'),
                             ('meta+imprint', '-.')):
                rr = sorted((r for r in rows if r['scene'] == name and r['backbone'] == bb
                             and r['init'] == init), key=lambda r: r['steps'])
                if not rr:
                    continue
                y = [r['recall_5cm_5deg'] for r in rr]
                label = f'{bb}, {init} start'
                axes[i, 0].plot([r['steps'] for r in rr], y, ls, color=colours[bb], marker='o',
                                label=label)
                axes[i, 1].plot([r['head_seconds'] for r in rr], y, ls, color=colours[bb],
                                marker='o', label=label)
                med = [r['median_cm'] if r['median_cm'] is not None else float('nan')
                       for r in rr]
                axes[i, 2].plot([r['steps'] for r in rr], med, ls, color=colours[bb],
                                marker='o', label=label)
        axes[i, 0].set(title=name, xlabel='head training steps', xscale='log',
                       ylabel='recall 5 cm / 5 deg', ylim=(-0.02, 1.02))
        axes[i, 1].set(title=name, xlabel='head training seconds (2 CPU cores)', xscale='log',
                       ylim=(-0.02, 1.02))
        axes[i, 2].set(title=name, xlabel='head training steps', xscale='log',
                       ylabel='median error cm (none: no pose)', yscale='log')
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7, handlelength=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_arguments(p, a):
    """Refuse combinations that cannot run (nothing to check when only re-making the table)."""
    if a.rows:
        return
    if 'pretrained' in a.backbones.split(',') and not a.pretrained:
        p.error('--pretrained is needed for the pretrained backbone (or pass --backbones)')
    if a.pretrained and '{held_out}' in a.pretrained and not a.leave_one_out:
        p.error('--pretrained with {held_out} names a backbone per held-out scene: it needs '
                '--leave-one-out')
    if a.leave_one_out and (not a.corpus or a.meta_init):
        p.error('--leave-one-out meta-trains on --corpus (and not with --meta-init)')
    if not a.meta_init and not a.corpus and any(s.startswith('meta') for s in a.starts.split(',')):
        p.error('a meta start needs --corpus (to meta-train) or --meta-init')


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--corpus', help='corpus.json (make-corpus): its test scenes, and the '
                   'meta-training scenes unless --meta-init is given')
    p.add_argument('--pretrained', help='backbone.pth from scene-reloc pretrain; with '
                   '--leave-one-out a pattern with {held_out}, the corpus scene its pretraining '
                   'left out (e.g. out/pt-without-{held_out}/backbone.pth)')
    p.add_argument('--meta-init', metavar='FILE',
                   help='the ALIKE-n meta-learned start to use (e.g. the shipped '
                   'training/pretrained/meta-alike-n.safetensors) instead of meta-training one')
    p.add_argument('--real-data', metavar='ROOT',
                   help='../shared/data: the study room and the tabletop (even frames '
                   'memorized, odd queried)')
    p.add_argument('--leave-one-out', action='store_true',
                   help='each real scene of the corpus (make-corpus --add) held out in turn: '
                   'meta-trained without it, evaluated on it (with --data / --real-data)')
    p.add_argument('--starts', default='random,meta',
                   help='head starts: random, meta, imprint (level-1 rows from region means), '
                   'meta+imprint')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--data', help='7-Scenes redkitchen dev folder (dev-20 / dev-10 rows)')
    p.add_argument('--kitchen-queries', default='benchmark', choices=['benchmark', 'validation'],
                   help="the kitchen's queries: the benchmark's (15:700:10) or the validation "
                        'split of bench_validation.py (to choose settings on)')
    p.add_argument('--out', default='out/fewshot')
    p.add_argument('--test-scenes', type=int, default=2)
    p.add_argument('--budgets', default='50,200,650,2000',
                   help='head training steps (650: under a third of 2000, the default)')
    p.add_argument('--backbones', default='scratch,alike,pretrained')
    p.add_argument('--outer-steps', type=int, default=200, help='meta-train outer steps')
    p.add_argument('--inner-steps', type=int, default=100,
                   help='meta-train steps per episode (the shipped start: 100)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the partition, the augmented buffer and the head training '
                   '(run several to see how much a single-frame margin means)')
    p.add_argument('--rows', metavar='JSON',
                   help='only re-make the table and plot from an earlier fewshot.json')
    add_device_argument(p)
    a = p.parse_args()
    checked_device(a.device)
    check_arguments(p, a)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.makedirs(a.out, exist_ok=True)
    if a.rows:
        with open(a.rows) as f:
            old = json.load(f)
        rows, meta_info = old['rows'], old.get('meta_train', old.get('meta_train_seconds'))
    else:
        bbs = backbones(a)
        if a.leave_one_out:
            rows, meta_info = leave_one_out(a, bbs)
        else:
            inits = {bb: (a.meta_init, None, None) if a.meta_init and bb == 'alike' else
                     meta_init(a, bb, w) if a.corpus else (None, None, None)
                     for bb, w in bbs.items()}
            rows = []
            for scene in scenes(a):
                for bb, w in bbs.items():
                    rows += run_scene(a, scene, bb, w, inits[bb][0])
            meta_info = {bb: {'seconds': v[1], 'scenes': v[2]} for bb, v in inits.items()}
    result = {'rows': rows, 'summary': summarize(rows), 'meta_train': meta_info,
              'kitchen_queries': a.kitchen_queries}
    with open(os.path.join(a.out, 'fewshot.json'), 'w') as f:
        json.dump(result, f, indent=2)
    lines = table(rows, result['summary'])
    with open(os.path.join(a.out, 'fewshot.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    plot(rows, os.path.join(a.out, 'fewshot.png'))
    print(json.dumps(result['summary'], indent=2))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
