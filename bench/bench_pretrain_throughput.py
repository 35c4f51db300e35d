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
Pretraining throughput on 1 and 2 processes (torchrun, DistributedDataParallel).

Runs ``scene-reloc pretrain`` for a fixed number of iterations on the same global batch, alone
and under ``torchrun --nproc_per_node 2``, and reads the training seconds (scene reading and
labelling excluded) from each run's pretrain.json. One batch holds one scene, so scene-batches/s
equals iterations/s. With ``--init W`` (ALIKE-n weights) pretraining keeps their detector and
descriptors (a teacher pass per batch, the default from weights), and ``--meta-steps N`` also
times ``scene-reloc meta-train`` (N outer steps of ``--meta-batch`` episodes, default 2, 100
inner steps each; buffers excluded) alone and on 2 processes (on GPUs one process per GPU, so a
machine with one GPU runs one); ``--batched`` adds a run with ``meta-train --batched`` (each
outer step's episodes as one stacked head), ``--matching-weight W`` one of pretraining with the
cross-view matching loss. Prints one metrics JSON per run and the table.

  python bench/bench_pretrain_throughput.py --corpus out/corpus/corpus.json --out out/throughput
  python bench/bench_pretrain_throughput.py --corpus out/corpus_real/corpus.json
      --init ../shared/weights/alike-n.pth --meta-steps 10 --out out/throughput_real
"""

import argparse
import json
import os
import subprocess
import sys

# As modules of this interpreter, so that it also runs where the package is on PYTHONPATH only
# (the lent GPU machine, bench/gpu_check.sh) and no console script is installed.
CLI = ['-m', 'scene_reloc_training.cli']


def _launch(args, procs, threads):
    cmd = [sys.executable] + CLI + args if procs == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
         str(procs)] + CLI + args
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def run(a, procs, threads, device, matching=0.0):
    out = os.path.join(a.out, f'{device}-{procs}proc{"-matching" * bool(matching)}')
    _launch(['pretrain', '--corpus', a.corpus, '--out', out, '--iterations', str(a.iterations),
             '--batch-size', str(a.batch_size), '--max-scenes', str(a.scenes), '--val-every',
             '0', '--log-every', str(a.iterations), '--device', device, '--quiet',
             '--init', a.init, '--matching-weight', str(matching)], procs, threads)
    with open(os.path.join(out, 'pretrain.json')) as f:
        seconds = json.load(f)['history'][-1]['seconds']
    return {'run': 'pretrain' + ' (matching loss)' * bool(matching), 'device': device,
            'processes': procs,
            'threads_per_process': threads, 'global_batch': a.batch_size,
            'iterations': a.iterations, 'train_seconds': seconds,
            'images_per_s': round(a.iterations * a.batch_size / seconds, 2),
            'scene_batches_per_s': round(a.iterations / seconds, 2)}


def run_meta(a, procs, threads, device, batched=False):
    out = os.path.join(a.out, f'meta-{device}-{procs}proc{"-batched" * batched}.safetensors')
    _launch(['meta-train', '--corpus', a.corpus, '--out', out, '--backbone', 'alike-n',
             '--backbone-weights', a.init, '--outer-steps', str(a.meta_steps), '--meta-batch',
             str(a.meta_batch), '--max-scenes', str(a.scenes), '--device', device, '--quiet']
            + ['--batched'] * batched, procs, threads)
    with open(out + '.json') as f:
        seconds = json.load(f)['history'][-1]['seconds']
    episodes = a.meta_batch * a.meta_steps
    return {'run': 'meta-train' + ' (batched episodes)' * batched, 'device': device,
            'processes': procs, 'threads_per_process': threads, 'global_batch': a.meta_batch,
            'iterations': a.meta_steps, 'train_seconds': seconds,
            'episodes_per_s': round(episodes / seconds, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--corpus', required=True)
    p.add_argument('--out', default='out/throughput')
    p.add_argument('--iterations', type=int, default=300)
    p.add_argument('--batch-size', type=int, default=4, help='global batch (split over procs)')
    p.add_argument('--scenes', type=int, default=8, help='train scenes read per process')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--init', default='scratch', metavar='scratch|W',
                   help='pretrain from these weights (keeping their detector and descriptors)')
    p.add_argument('--meta-steps', type=int, default=0,
                   help='also time meta-train for this many outer steps (needs --init W)')
    p.add_argument('--matching-weight', type=float, default=0.0,
                   help='also time pretraining with this cross-view matching loss weight, on '
                   'one process')
    p.add_argument('--meta-batch', type=int, default=2, help='episodes per outer step')
    p.add_argument('--batched', action='store_true',
                   help='also time meta-train --batched (episodes as one stacked head)')
    p.add_argument('--skip-pretrain', action='store_true',
                   help='time meta-train only (with --meta-steps)')
    a = p.parse_args()
    if a.meta_steps and a.init == 'scratch':
        p.error('--meta-steps needs --init (the ALIKE-n weights to meta-train on)')
    if a.skip_pretrain and not a.meta_steps:
        p.error('--skip-pretrain leaves nothing to time without --meta-steps')
    if a.batched and not a.meta_steps:
        p.error('--batched times meta-train: give --meta-steps too')
    if a.meta_steps and a.meta_batch % 2:
        p.error(f'--meta-batch {a.meta_batch}: the 2-process runs need an even meta-batch')
    cores = os.cpu_count() or 1
    procs = [1, 2]
    if a.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            p.error('--device cuda: PyTorch sees no GPU here')
        # NCCL takes one GPU per process: two processes need two GPUs.
        gpus = torch.cuda.device_count()
        procs = [n for n in procs if n <= gpus]
        if len(procs) < 2:
            print(f'{gpus} GPU: the 2-process runs need 2 GPUs (NCCL: one per process); '
                  'skipped', file=sys.stderr)
    rows = [] if a.skip_pretrain else [run(a, n, max(1, cores // n), a.device) for n in procs]
    if a.matching_weight and not a.skip_pretrain:
        rows.append(run(a, 1, cores, a.device, a.matching_weight))
    if a.meta_steps:
        rows += [run_meta(a, n, max(1, cores // n), a.device) for n in procs]
        if a.batched:
            rows.append(run_meta(a, 1, cores, a.device, batched=True))
    for r in rows:
        print(json.dumps(r))
    print('| run | device | processes x threads | global batch | images/s or episodes/s | '
          'scene-batches/s | training s |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        rate = r.get('images_per_s', r.get('episodes_per_s'))
        print(f"| {r['run']} | {r['device']} | {r['processes']} x {r['threads_per_process']} | "
              f"{r['global_batch']} | {rate} | {r.get('scene_batches_per_s', '')} | "
              f"{r['train_seconds']} |")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'throughput.json'), 'w') as f:
        json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
