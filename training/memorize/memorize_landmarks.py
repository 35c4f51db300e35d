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

"""Memorize a scene as landmarks + a heatmap head (``memorize --head landmark_detector``)."""

import time

import numpy as np

from scene_reloc.landmark_head import LANDMARK_FORMATS, LandmarkHeadConfig
from scene_reloc.retrieval.database import frame_items_tensors
from scene_reloc_training.memorize.landmark_training import (
    build_landmark_buffer,
    train_landmark_head,
)
from scene_reloc_training.memorize.landmarks import auto_observation_count, select_landmarks


def memorize_landmarks(frames, images, feats, depths, extractor, cfg, out_path, resume, progress,
                       t0):
    """
    Select landmarks, buffer frozen features, train the heatmap head.

    :return: (tensors, head config, summary) for the map writer.
    """
    poses = [f.load_pose() for f in frames]
    if cfg.landmark_format not in LANDMARK_FORMATS:
        raise ValueError(f'landmark_format must be one of {LANDMARK_FORMATS}, '
                         f'got {cfg.landmark_format!r}')
    lms = select_landmarks(feats, poses, [f.K for f in frames], depths, cfg.landmarks,
                           sizes_wh=[(im.shape[1], im.shape[0]) for im in images],
                           occlusion_test=cfg.landmark_visibility == 'depth',
                           observations=cfg.landmark_observations or
                           auto_observation_count(len(frames)))
    if len(lms.xyz) < 8:
        raise ValueError(f'only {len(lms.xyz)} landmarks could be selected: memorize more '
                         'frames, or frames with more texture and valid depth')
    if cfg.landmark_heads < 1:
        raise ValueError(f'landmark_heads must be at least 1, got {cfg.landmark_heads}')
    head_cfg = LandmarkHeadConfig(version=cfg.landmark_format, in_dim=extractor.descriptor_dim,
                                  hidden=cfg.hidden // (2 if cfg.landmark_format >= 2 else 4),
                                  num_landmarks=len(lms.xyz),
                                  landmarks_per_head=-(-len(lms.xyz) // cfg.landmark_heads))
    buffer = build_landmark_buffer(extractor, images, feats, lms, cfg.augmentations, cfg.seed,
                                   progress)
    t_buffer = time.perf_counter() - t0
    model, stats = train_landmark_head(
        buffer, head_cfg, cfg.landmark_iterations, cfg.landmark_batch,
        cfg.landmark_lr if cfg.landmark_format >= 2 else cfg.lr, cfg.weight_decay,
        cfg.seed, extractor.device, checkpoint=out_path + '.ckpt', resume=resume,
        progress=progress, loss=cfg.landmark_loss, precision=cfg.precision)
    lo, med, hi = lms.coverage()
    # float16 halves the map; the heatmaps it gives differ by < 1e-3 (tested).
    tensors = {f'head.{k}': v.detach().cpu().half().numpy()
               for k, v in model.state_dict().items()}
    tensors['landmarks.xyz'] = lms.xyz
    tensors['landmarks.saliency'] = lms.saliency.astype('float32')
    if cfg.landmark_format >= 2:
        tensors['landmarks.observations'] = np.clip(np.round(lms.observations * 127), -127,
                                                     127).astype(np.int8)
    else:
        tensors['landmarks.desc'] = np.clip(np.round(lms.desc * 127), -127, 127).astype(np.int8)
    tensors.update(frame_items_tensors([np.flatnonzero(v) for v in lms.visible]))
    summary = {'train_seconds': round(time.perf_counter() - t0, 2),
               'buffer_seconds': round(t_buffer, 2),
               'buffer_images': int(buffer['grid'].shape[0]),
               'landmarks': int(len(lms.xyz)),
               'landmark_redetections_median': float(np.median(lms.redetections)),
               'landmarks_visible_per_frame_min': lo,
               'landmarks_visible_per_frame_median': med,
               'landmarks_visible_per_frame_max': hi,
               'precision': stats.pop('precision'),
               **{k: round(v, 4) for k, v in stats.items()}}
    return tensors, head_cfg, summary
