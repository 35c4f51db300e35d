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
Train the landmark heatmap head on a buffer of frozen backbone grids (the fast SLD recipe).

The buffer holds, for every memorized frame and several augmented views of it, the backbone's
1/8-grid descriptors and where each landmark is (pixels) and whether it is visible. The backbone
never runs again while the head trains; batches are random crops of buffered grids (the head is
convolutional, so crops are as good as whole images and several times cheaper).
"""

import math

import numpy as np
import torch
from tqdm import tqdm

from scene_reloc.backbones import GRID_STRIDE
from scene_reloc.landmark_head import (
    focal_heatmap_loss,
    heatmap_peaks,
    heatmap_targets,
    LandmarkDetector,
    mse_heatmap_loss,
)
from scene_reloc_training.memorize.augment import augment_with_landmarks
from scene_reloc_training.memorize.resumable import ResumableRun


def build_landmark_buffer(extractor, images, frame_feats, landmarks, augmentations, seed,
                          progress=True, margin=4):
    """
    Buffered grids and landmark labels.

    :return: dict ``grid`` (N, D, Hc, Wc) float16, ``xy`` (N, L, 2) float32 pixels,
        ``visible`` (N, L) bool.
    """
    rng = np.random.default_rng(seed)
    grids, xys, vis = [], [], []
    for f, ff in enumerate(frame_feats):
        grids.append(ff.grid_desc.permute(2, 0, 1).to(torch.float16))
        xys.append(np.nan_to_num(landmarks.xy[f]))
        vis.append(landmarks.visible[f])
    jobs = [(i, a) for a in range(augmentations) for i in range(len(images))]
    for i, _ in tqdm(jobs, desc='augmented views', unit='view', disable=not progress or not jobs):
        img, xy, v = augment_with_landmarks(rng, images[i], landmarks.xy[i],
                                            landmarks.visible[i], margin)
        g = extractor.grid_features(extractor.to_tensor(img))[0].cpu()
        grids.append(g.permute(2, 0, 1).to(torch.float16))
        xys.append(xy)
        vis.append(v)
    return {'grid': torch.stack(grids), 'xy': torch.from_numpy(np.stack(xys)).float(),
            'visible': torch.from_numpy(np.stack(vis))}


def _crop(buffer, idx, crop_hw, gen):
    g = buffer['grid'][idx].float()
    B, _, H, W = g.shape
    ch, cw = min(crop_hw[0], H), min(crop_hw[1], W)
    y0 = int(torch.randint(H - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(W - cw + 1, (1,), generator=gen))
    xy = buffer['xy'][idx] - torch.tensor([x0, y0]) * GRID_STRIDE
    vis = buffer['visible'][idx] & (xy[..., 0] >= 0) & (xy[..., 1] >= 0) & \
        (xy[..., 0] < cw * GRID_STRIDE) & (xy[..., 1] < ch * GRID_STRIDE)
    return g[:, :, y0:y0 + ch, x0:x0 + cw], xy, vis


def train_landmark_head(buffer, cfg, iterations, batch_size, lr, weight_decay, seed, device,
                        crop_hw=(32, 40), checkpoint=None, resume=False, progress=True,
                        log_every=50, callback=None, loss='focal', cell_batch=1024,
                        precision='fp32'):
    """
    Fit a :class:`LandmarkDetector`; seeded, resumable.

    Format 1 heads train on crops of ``batch_size`` buffered grids with a heatmap loss
    (``focal`` or ``mse``); format 2 heads (per-cell classifiers) on ``cell_batch`` cells, half
    of them cells a landmark falls in, with cross-entropy.

    ``callback(it, model)`` runs every ``log_every`` iterations (the model in eval mode).

    :return: (model in eval mode, stats dict).
    """
    losses = {'focal': focal_heatmap_loss, 'mse': mse_heatmap_loss}
    if loss not in losses:
        raise ValueError(f'landmark loss must be one of {", ".join(losses)}, got {loss!r}')
    loss_fn = losses[loss]
    torch.manual_seed(seed)
    model = LandmarkDetector(cfg).to(device)
    run = ResumableRun(model, iterations, lr, weight_decay, seed, checkpoint, resume, precision)
    gen, start = run.gen, run.start
    n = buffer['grid'].shape[0]
    if cfg.version >= 2:
        cells, labels = cell_labels(buffer, cfg.num_landmarks)
        positives = torch.nonzero(labels < cfg.num_landmarks)[:, 0]
    model.train()
    loss_avg = math.nan
    bar = tqdm(range(start, iterations), desc='training landmark head', unit='it',
               initial=start, total=iterations, disable=not progress)
    for it in bar:
        if cfg.version >= 2:
            with run.autocast():
                value = _cell_batch_loss(model, cells, labels, positives, cell_batch, gen,
                                         device)
        else:   # format 1 trains as it always did (float32)
            idx = torch.randint(n, (batch_size,), generator=gen)
            g, xy, vis = _crop(buffer, idx, crop_hw, gen)
            target = heatmap_targets(xy, vis, g.shape[2], g.shape[3])
            value = loss_fn(model(g.to(device)), target.to(device))
        run.step(value)
        v = float(value.detach())
        loss_avg = v if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * v
        if (it + 1) % log_every == 0 or it + 1 == iterations:
            bar.set_postfix(loss=f'{loss_avg:.3f}')
            if callback is not None:
                model.eval()
                with torch.no_grad():
                    callback(it + 1, model)
                model.train()
            run.save(it + 1)
    model.eval()
    return model, {'final_loss': loss_avg, 'precision': run.precision,
                   **buffer_detection(model, buffer, device)}


def cell_labels(buffer, num_landmarks):
    """
    Every buffered grid cell with the landmark that falls in it.

    :return: (cells (M, D) float16, labels (M,) int64: the landmark nearest the cell's centre
        among those projecting into it, ``num_landmarks`` where there is none).
    """
    grid = buffer['grid']
    N, D, H, W = grid.shape
    cells = grid.permute(0, 2, 3, 1).reshape(-1, D).contiguous()
    labels = np.full(N * H * W, num_landmarks, dtype=np.int64)
    g = (buffer['xy'] + 0.5) / GRID_STRIDE                                   # (N, L, 2) cells
    col, row = g[..., 0].floor().long(), g[..., 1].floor().long()
    inside = buffer['visible'] & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    off = ((g - g.floor() - 0.5) ** 2).sum(-1)                               # from the centre
    img, lm = torch.nonzero(inside, as_tuple=True)
    flat = img * H * W + row[img, lm] * W + col[img, lm]
    # Farthest first, so that of several landmarks in one cell the nearest is written last
    # (numpy keeps the last of repeated indices).
    order = torch.argsort(off[img, lm], descending=True, stable=True)
    labels[flat[order].numpy()] = lm[order].numpy()
    return cells, torch.from_numpy(labels)


def _cell_batch_loss(model, cells, labels, positives, batch, gen, device):
    half = batch // 2
    pos = positives[torch.randint(len(positives), (half,), generator=gen)] if len(positives) \
        else torch.randint(len(labels), (half,), generator=gen)
    idx = torch.cat([pos, torch.randint(len(labels), (batch - half,), generator=gen)])
    return model.cell_loss(cells[idx].float().to(device), labels[idx].to(device))


@torch.inference_mode()
def buffer_detection(model, buffer, device, frames=8):
    """Median pixel error of detected visible landmarks on the first buffered (real) frames."""
    errs = []
    for i in range(min(frames, buffer['grid'].shape[0])):
        prob = model.probabilities(buffer['grid'][i:i + 1].float().to(device))[0]
        xy, _ = heatmap_peaks(prob)
        v = buffer['visible'][i]
        errs.append(torch.linalg.norm(xy.cpu()[v] - buffer['xy'][i][v], dim=1))
    e = torch.cat(errs) if errs else torch.zeros(0)
    return {'train_landmark_px_median': float(e.median()) if e.numel() else float('nan')}
