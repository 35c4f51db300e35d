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

"""Scenes, validation and logs of backbone pretraining (``scene-reloc pretrain``)."""

import csv
import dataclasses
import os
import sys
import tempfile

import numpy as np
import torch

from scene_reloc.evaluation import compute_metrics, localize_frames
from scene_reloc.landmark_head import LandmarkHeadConfig
from scene_reloc.partition import HierarchicalPartition
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
from scene_reloc.region_head import RegionHeadConfig
from scene_reloc_training.learn.matching import overlap_partners
from scene_reloc_training.learn.pretrain_backbone import SceneData
from scene_reloc_training.memorize.memorize_scene import EdgeMaskError, MemorizeConfig, read_frames


def scene_frames(root, spec):
    """Frames of a scene folder; a ``spec`` naming a file inside the folder is read from it."""
    folder = PosedFrameFolder(root)
    inside = os.path.join(root, spec)
    return folder.frames(parse_frame_list(inside if os.path.exists(inside) else spec, folder))


def read_corpus_frames(root, frames, extractor, cfg, progress):
    """
    :func:`read_frames` for a run over many scenes: speckled depth does not stop it.

    A scene whose depth the edge mask empties (e.g. a structured-light tabletop) is read without
    the mask, with a note, instead of stopping a run over many scenes.
    """
    try:
        return read_frames(frames, extractor, cfg, progress)
    except EdgeMaskError as e:
        print(f'{root}: {e}; read with --edge-margin 0', file=sys.stderr)
        return read_frames(frames, extractor, dataclasses.replace(cfg, edge_margin=0), progress)


def prepare_scene(root, frames_spec, extractor, heads, out_dim, landmarks=150, k1=16, k2=16,
                  hidden=128, seed=0, progress=True, matching=False):
    """
    Read a scene and label it for the requested ``heads`` (``region`` and / or ``landmark``).

    ``extractor`` selects the landmarks (any backbone: the labels are pixels); ``out_dim`` is
    the descriptor size of the backbone being trained. With ``matching`` the scene also keeps
    its coordinates and each frame's overlapping frames (the matching loss).
    """
    from scene_reloc_training.memorize.landmarks import select_landmarks
    frames = scene_frames(root, frames_spec)
    cfg = MemorizeConfig(device=str(extractor.device), seed=seed,
                         head='region_classifier' if 'region' in heads else 'landmark_detector')
    images, coords, feats, depths = read_corpus_frames(root, frames, extractor, cfg, progress)
    scene = SceneData(images)
    if 'landmark' in heads:
        lms = select_landmarks(feats, [f.load_pose() for f in frames], [f.K for f in frames],
                               depths, landmarks)
        scene.xy, scene.visible = lms.xy, lms.visible
        scene.head_cfg = LandmarkHeadConfig(in_dim=out_dim, num_landmarks=len(lms.xyz))
    if 'region' in heads:
        pts = np.concatenate([c[::4, ::4].reshape(-1, 3) for c in coords])
        scene.partition = HierarchicalPartition.build(pts, k1, k2, seed=seed)
        scene.coords = coords
        scene.region_cfg = RegionHeadConfig(in_dim=out_dim, hidden=hidden,
                                            k1=scene.partition.k1, k2=scene.partition.k2)
    if matching:   # only coordinates lifted from depth (triangulated ones are per 8 px cell)
        scene.coords = coords
        scene.lifted = [d is not None for d in depths]
        if not any(scene.lifted):
            print(f'{root}: no depth, so no matching loss on this scene', file=sys.stderr)
        scene.partners = overlap_partners(
            [c if ok else np.full_like(c, np.nan) for c, ok in zip(coords, scene.lifted)],
            seed=seed)
    return scene


def evaluate_frames(reloc, frames):
    """Localize ``frames`` with a :class:`Relocalizer`; metrics JSON against their poses."""
    return compute_metrics(localize_frames(reloc.localize, frames))


def few_shot_recall(net, backbone, roots, iterations=300, device='cpu',
                    memorize_spec='memorize.txt', query_spec='query.txt'):
    """
    Validate: memorize each scene head-only on ``net`` (frozen), localize its queries.

    :return: dict with ``val_recall_5cm_5deg`` and ``val_median_cm`` averaged over the scenes.
    """
    from scene_reloc.relocalizer import Relocalizer
    from scene_reloc_training.memorize.memorize_scene import memorize
    recalls, medians = [], []
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, 'backbone.pth')
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, weights)
        for i, root in enumerate(roots):
            path = os.path.join(tmp, f'val{i}.map')
            memorize(scene_frames(root, memorize_spec), path, MemorizeConfig(
                backbone=backbone, backbone_weights=weights, device=device,
                iterations=iterations, augmentations=1, head_init='none'), progress=False)
            m = evaluate_frames(Relocalizer.from_file(path, weights, device),
                                scene_frames(root, query_spec))
            recalls.append(m['recall_5cm_5deg'])
            medians.append(m['median_translation_cm'] if m['median_translation_cm'] is not None
                           else float('inf'))
    med = float(np.median(medians))
    return {'val_recall_5cm_5deg': round(float(np.mean(recalls)), 4),
            'val_median_cm': round(med, 3) if np.isfinite(med) else None}


def write_log(history, csv_path, png_path=None):
    """Write the history as CSV (one row per logged iteration) and, optionally, a plot."""
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(csv_path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    if png_path is None or not history:
        return
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = [r for r in history if 'loss' in r]
    ax[0].plot([r['iteration'] for r in rows], [r['loss'] for r in rows])
    ax[0].set(xlabel='iteration', ylabel='training loss (smoothed)', yscale='log')
    val = [r for r in history if 'val_recall_5cm_5deg' in r]
    if val:
        ax[1].plot([r['seconds'] for r in val], [r['val_recall_5cm_5deg'] for r in val], 'o-')
    ax[1].set(xlabel='training seconds', ylabel='val. recall 5 cm / 5 deg', ylim=(0, 1.02))
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
