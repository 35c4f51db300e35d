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

"""Train the region classifier on the feature buffer: seeded, with a progress bar, resumable."""

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scene_reloc.region_head import RegionClassifier
from scene_reloc_training.memorize.imprinting import imprint_level1
from scene_reloc_training.memorize.resumable import ResumableRun


def train_region_head(buffer, head_cfg, iterations, batch_size, lr, weight_decay, seed,
                      device, checkpoint=None, resume=False, progress=True, log_every=100,
                      init_state=None, precision='fp32', imprint=False):
    """
    Fit a :class:`RegionClassifier` to buffered descriptors.

    Loss: cross-entropy on the level-1 region plus cross-entropy on the level-2 sub-region given
    the true region. One-cycle learning rate. ``init_state``: the head's start (random when
    None). ``imprint``: the level-1 classifier then starts as the nearest-region-mean
    classifier of the start's trunk features (:mod:`.imprinting`). ``precision``: ``fp32``,
    ``bf16`` or ``auto`` (see :mod:`scene_reloc.precision`). Every ``log_every`` iterations
    the state (model, optimiser, iteration, RNG) goes to ``checkpoint``; with ``resume`` a run
    continues from it.

    :return: (model in eval mode, stats dict with final losses and buffer accuracies).
    """
    torch.manual_seed(seed)
    model = RegionClassifier(head_cfg)
    if init_state is not None:   # e.g. a meta-learned start (scene-reloc meta-train)
        model.load_state_dict(init_state)
    model = model.to(device)
    imprinted = imprint_level1(model, buffer, device) if imprint else {}
    run = ResumableRun(model, iterations, lr, weight_decay, seed, checkpoint, resume, precision)
    gen, start = run.gen, run.start
    n = buffer['desc'].shape[0]
    model.train()
    bar = tqdm(range(start, iterations), desc='training head', disable=not progress,
               initial=start, total=iterations, unit='it')
    loss_avg = math.nan
    for it in bar:
        with run.autocast():
            loss = region_loss(model, buffer, torch.randint(n, (batch_size,), generator=gen),
                               device)
        run.step(loss)
        loss_val = float(loss.detach())
        loss_avg = loss_val if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss_val
        if (it + 1) % log_every == 0 or it + 1 == iterations:
            bar.set_postfix(loss=f'{loss_avg:.3f}')
            run.save(it + 1)
    model.eval()
    return model, {'final_loss': loss_avg, 'precision': run.precision, **imprinted,
                   **buffer_accuracy(model, buffer, device)}


def region_loss(model, buffer, idx, device):
    """Level-1 + level-2 (given the true region) cross-entropy on buffer rows ``idx``."""
    y1 = buffer['l1'][idx].to(device)
    logit1, logit2 = model(buffer['desc'][idx].float().to(device), y1)
    return region_cross_entropy(logit1, logit2, y1, (buffer['leaf'][idx] % model.cfg.k2)
                                .to(device))


def region_cross_entropy(logit1, logit2, region, subregion):
    """Return the region classifier's loss: level-1 + level-2 cross-entropy."""
    return F.cross_entropy(logit1, region) + F.cross_entropy(logit2, subregion)


@torch.inference_mode()
def buffer_accuracy(model, buffer, device, max_samples=50_000):
    """Top-1 region and leaf accuracy on (a sample of) the buffer: a fit sanity check."""
    n = buffer['desc'].shape[0]
    idx = torch.linspace(0, n - 1, min(n, max_samples)).long()
    leaf, _ = model.top_leaves(buffer['desc'][idx].float().to(device), 1, 1)
    true = buffer['leaf'][idx].to(device)
    k2 = model.cfg.k2
    return {'train_region_accuracy': float((leaf[:, 0] // k2 == true // k2).float().mean()),
            'train_leaf_accuracy': float((leaf[:, 0] == true).float().mean())}
