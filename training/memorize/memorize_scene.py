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
Memorize a scene from a few posed RGB-D frames: partition, map points, buffer, head, map file.

``memorize(frames, out_path, cfg)`` is what ``scene-reloc memorize`` runs.
"""

from dataclasses import asdict, dataclass
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from scene_reloc import __version__
from scene_reloc.artifact import refuse_unknown_keys
from scene_reloc.backbones import FeatureExtractor
from scene_reloc.partition import HierarchicalPartition
from scene_reloc.posed_frames import CAMERA_RECORD
from scene_reloc.precision import no_tf32
from scene_reloc.region_head import RegionHeadConfig
from scene_reloc.relocalizer import LocalizerConfig
from scene_reloc.retrieval.database import build_database, frame_items_tensors
from scene_reloc.scene_map import save_scene_map
from scene_reloc_training.memorize.feature_buffer import (
    attach_coordinates,
    build_buffer,
    extract_frame,
)
from scene_reloc_training.memorize.frame_geometry import frame_geometry
from scene_reloc_training.memorize.head_init import resolve_head_init
from scene_reloc_training.memorize.region_training import train_region_head
from scene_reloc_training.memorize.retrieval_db import resolve_retrieval_model
from scene_reloc_training.memorize.scene_coordinates import (
    scene_coordinate_image,
    splat_coordinates,
)


@dataclass
class MemorizeConfig:
    """Everything that decides a memorized map (stored in its manifest)."""

    backbone: str = 'handcrafted'
    """Backbone name (``scene-reloc memorize --help`` lists them)."""
    backbone_weights: str | None = None
    """Path to the backbone's weights (ALIKE nets need them)."""
    device: str = 'auto'
    """auto | cpu | cuda."""
    k1: int = 64
    """Level-1 regions of the partition."""
    k2: int = 64
    """Level-2 sub-regions per region."""
    hidden: int = 256
    """Width of the classifier."""
    augmentations: int = 8
    """Augmented views per frame in the buffer."""
    iterations: int = 1000
    """Head training iterations."""
    batch_size: int = 1024
    """Cells per training batch."""
    lr: float = 3e-3
    """Peak learning rate (one-cycle)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    points_per_leaf: int = 8
    """3D map points kept per leaf for the in-leaf refinement."""
    max_keypoints: int = 2048
    """Keypoints per memorized frame (candidate map points)."""
    edge_margin: int = 3
    """Drop depth within this many pixels of a discontinuity (0: keep all)."""
    depth_offset_m: tuple = (0.0, 0.0, 0.0)
    """Depth camera centre in the colour camera frame, for misregistered depth (metres)."""
    seed: int = 0
    """Seed of everything random (k-means, augmentation, training)."""
    head: str = 'region_classifier'
    """region_classifier (SRC) or landmark_detector (SLD)."""
    landmarks: int = 0
    """landmark_detector: landmarks to select (0: 50 per memorized frame, 300 to 5000)."""
    landmark_observations: int = 0
    """landmark_detector: re-detected keypoint descriptors stored per landmark (0: one per 16
    memorized frames, 3 to 8: more frames span more viewpoints)."""
    landmark_heads: int = 1
    """landmark_detector: networks in the ensemble (the landmarks are split evenly)."""
    landmark_lr: float = 1e-2
    """landmark_detector, format 2: peak learning rate of the head (one-cycle; format 1 heads
    train with ``lr``, as they always did)."""
    landmark_format: int = 2
    """landmark_detector: 2 (per-cell landmark classifiers, cross-entropy) or 1 (3x3
    convolutional sigmoid heatmaps, the earlier format, trained with ``landmark_loss``)."""
    landmark_loss: str = 'focal'
    """landmark_detector, format 1: heatmap loss, focal (CenterNet) or mse (the SLD release)."""
    landmark_visibility: str = 'depth'
    """landmark_detector with depth: a landmark is labelled visible where it projects and the
    frame's depth agrees (depth), or wherever it projects (projection: no occlusion test)."""
    landmark_iterations: int = 2000
    """landmark_detector: head training iterations."""
    landmark_batch: int = 4
    """landmark_detector: grid crops per batch."""
    head_init: str = 'auto'
    """region_classifier: start of the head: auto (a meta-learned init that fits, else
    random), none (random) or a head-init file (``scene-reloc meta-train``)."""
    retrieval_model: str = 'auto'
    """Model the map's retrieval database is built with: auto (a trained one that fits the
    backbone, else the built-in untrained GeM) or a file (``scene-reloc train-retrieval``)."""
    name: str = ''
    """The map's name in a site and in the node's messages (default: the file's stem)."""
    frame_id: str = 'map'
    """TF frame of the map's coordinates."""
    precision: str = 'auto'
    """Head training arithmetic: auto (bf16 where the CPU or GPU computes it natively, 2-3x
    faster; else fp32), bf16 or fp32."""
    runtime: str = 'auto'
    """What runs the backbone's dense part: auto | torch | onnxruntime | onednn (see
    :data:`scene_reloc.backbones.RUNTIMES`; the manifest records the one used)."""
    refine_poses: bool = False
    """Refine the frames' poses (from SLAM or odometry, centimetres off) by bundle adjustment
    over triangulated keypoint tracks, intrinsics fixed, in the poses' own frame and scale."""

    @classmethod
    def from_dict(cls, d):
        refuse_unknown_keys(cls, d, 'memorize')
        return cls(**d)


def select_map_points(frame_feats, partition, per_leaf):
    """
    Keypoints lifted to 3D, grouped by leaf, the ``per_leaf`` highest-scoring per leaf.

    :return: (xyz (M, 3) float32, desc (M, D) int8, leaf_offsets (L + 1,) int64), sorted by
        leaf so that leaf ``l`` owns rows ``offsets[l]:offsets[l + 1]``.
    """
    xyz = np.concatenate([f.kp_xyz for f in frame_feats])
    score = np.concatenate([f.kp_score for f in frame_feats])
    desc = torch.cat([f.kp_desc for f in frame_feats]).numpy()
    leaf, _ = partition.assign(xyz)
    ok = leaf >= 0
    xyz, score, desc, leaf = xyz[ok], score[ok], desc[ok], leaf[ok]
    order = np.lexsort((-score, leaf))  # by leaf, best score first
    leaf, xyz, desc = leaf[order], xyz[order], desc[order]
    first = np.searchsorted(leaf, leaf, side='left')
    keep = (np.arange(len(leaf)) - first) < per_leaf
    leaf, xyz, desc = leaf[keep], xyz[keep], desc[keep]
    offsets = np.searchsorted(leaf, np.arange(partition.num_leaves + 1), side='left')
    q = np.clip(np.round(desc * 127.0), -127, 127).astype(np.int8)
    return xyz.astype(np.float32), q, offsets.astype(np.int64)


def memorize(frames, out_path, cfg=MemorizeConfig(), resume=False, progress=True,
             frame_root=''):
    """
    Memorize ``frames`` (list of :class:`PosedFrame`) into the scene map ``out_path``.

    Float32 work runs in full float32, without TF32 on a GPU (as the queries do:
    :func:`scene_reloc.precision.no_tf32`).

    :return: summary dict (``train_seconds``, ``map_megabytes``, training statistics).
    """
    with no_tf32():
        return _memorize(frames, out_path, cfg, resume, progress, frame_root)


def _memorize(frames, out_path, cfg, resume, progress, frame_root):
    t0 = time.perf_counter()
    if cfg.head not in ('region_classifier', 'landmark_detector'):
        raise ValueError(f'head must be region_classifier or landmark_detector, got {cfg.head!r}')
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    torch.manual_seed(cfg.seed)
    extractor = FeatureExtractor(cfg.backbone, cfg.backbone_weights, cfg.device, cfg.runtime)
    scene = read_scene(frames, extractor, cfg, progress)
    frames = scene['frames']
    images, coords, feats, depths = (scene[k] for k in ('images', 'coords', 'feats', 'depths'))
    retrieval, retrieval_ref = resolve_retrieval_model(
        cfg.retrieval_model, cfg.backbone, extractor.weights_sha256, extractor.descriptor_dim)
    database = build_database(retrieval, [f.grid_desc.cpu() for f in feats],
                              [f.load_pose() for f in frames])
    if cfg.head == 'landmark_detector':
        from scene_reloc_training.memorize.memorize_landmarks import memorize_landmarks
        tensors, head_cfg, summary = memorize_landmarks(
            frames, images, feats, depths, extractor, cfg, out_path, resume, progress, t0)
    else:
        tensors, head_cfg, summary = _memorize_regions(
            images, coords, feats, extractor, cfg, out_path, resume, progress, t0)
    tensors.update(database)
    summary.update(scene['geometry'])
    return write_map(out_path, tensors, head_cfg, summary, extractor, cfg, frames, frame_root,
                     retrieval_ref)


def read_frames(frames, extractor, cfg, progress):
    """Colour, scene coordinates, backbone features and depth of the memorized frames."""
    scene = read_scene(frames, extractor, cfg, progress)
    return scene['images'], scene['coords'], scene['feats'], scene['depths']


def read_scene(frames, extractor, cfg, progress):
    """
    Read the memorized frames and give them scene coordinates.

    Frames with depth lift it; frames without depth take the coordinates of their keypoints
    triangulated with the known poses (the region classifier; the landmark detector
    triangulates its own candidates). With ``cfg.refine_poses`` the poses are first refined by
    bundle adjustment over the triangulated tracks.

    :return: dict with ``frames`` (with refined poses when refined), ``images``, ``coords``,
        ``feats``, ``depths`` and ``geometry`` (what triangulation and refinement did).
    """
    images, feats, depths, empty = [], [], [], []
    for fr in tqdm(frames, desc='reading frames', disable=not progress, unit='frame'):
        rgb = fr.load_color()
        depth = fr.load_depth()
        if depth is not None and not np.any(depth > 0):
            empty.append(fr.stem)     # an all-invalid depth image is no depth at all
            depth = None
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise ValueError(f'frame {fr.stem}: depth {depth.shape} and colour '
                             f'{rgb.shape[:2]} sizes differ')
        images.append(rgb)
        depths.append(depth)
        feats.append(extract_frame(extractor, rgb, None, cfg.max_keypoints))
    if empty:
        print(f'warning: {len(empty)} depth image(s) hold no valid depth and are treated as '
              f'missing: {", ".join(empty[:5])}{" ..." if len(empty) > 5 else ""}',
              file=sys.stderr)
    frames, kp_xyz, geometry = frame_geometry(frames, images, feats, depths, cfg, progress)
    coords = []
    for fr, rgb, ff, depth, kp in zip(frames, images, feats, depths, kp_xyz):
        if depth is not None:
            xyz = scene_coordinate_image(depth, fr.K, fr.load_pose(), cfg.edge_margin,
                                         cfg.depth_offset_m)
            attach_coordinates(ff, rgb.shape[:2], xyz)
        elif kp is not None:
            xyz = splat_coordinates(rgb.shape[:2], ff.kp_xy, kp)
            attach_coordinates(ff, rgb.shape[:2], xyz, kp_xyz=kp)
        else:
            xyz = np.full(rgb.shape[:2] + (3,), np.nan, np.float32)
        coords.append(xyz)
    _check_edge_mask(frames, depths, coords, cfg)
    return {'frames': frames, 'images': images, 'coords': coords, 'feats': feats,
            'depths': depths, 'geometry': geometry}


class EdgeMaskError(ValueError):
    """The depth-edge mask removed all the valid depth of the frames (speckled depth)."""


def _check_edge_mask(frames, depths, coords, cfg):
    """Say so when the depth-edge mask removed (nearly) all the valid depth of the frames."""
    valid = sum(int((d > 0).sum()) for d in depths if d is not None)
    kept = sum(int(np.isfinite(c).all(-1).sum()) for c in coords)
    if cfg.edge_margin > 0 and valid and kept < 0.05 * valid:
        msg = (f'the depth-edge mask (--edge-margin {cfg.edge_margin}) kept {kept} of {valid} '
               'valid depth pixels: the depth is sparse or speckled (every pixel near an '
               'invalid one counts as an edge); memorize with --edge-margin 0')
        if kept == 0:
            raise EdgeMaskError(msg)
        print(f'warning: {msg}', file=sys.stderr)


def region_material(images, coords, feats, extractor, cfg, progress):
    """
    Everything the region classifier is trained on and packed with, built once per scene.

    :return: dict with ``partition``, ``head_cfg``, ``points`` (xyz, desc, leaf offsets) and
        ``buffer`` (see :func:`build_buffer`).
    """
    # Partition every valid pixel's coordinate (strided), not only cell centres: finer coverage.
    pts = np.concatenate([c[::4, ::4].reshape(-1, 3) for c in coords])
    partition = HierarchicalPartition.build(pts, cfg.k1, cfg.k2, seed=cfg.seed)
    head_cfg = RegionHeadConfig(in_dim=extractor.descriptor_dim, hidden=cfg.hidden,
                                k1=partition.k1, k2=partition.k2)
    points = select_map_points(feats, partition, cfg.points_per_leaf)
    buffer = build_buffer(extractor, images, coords, feats, partition, cfg.augmentations,
                          cfg.seed, progress)
    seen = []
    for c in coords:
        xyz = c[::4, ::4].reshape(-1, 3)
        leaf, _ = partition.assign(xyz[np.isfinite(xyz).all(1)])
        seen.append(np.unique(leaf[leaf >= 0]))
    return {'partition': partition, 'head_cfg': head_cfg, 'points': points, 'buffer': buffer,
            'frame_items': frame_items_tensors(seen)}


def region_tensors(material, model):
    """Map tensors of a trained region classifier: head, partition, map points."""
    xyz_map, desc_map, offsets = material['points']
    tensors = {f'head.{k}': v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tensors.update(material['partition'].tensors())
    tensors.update({'points.xyz': xyz_map, 'points.desc': desc_map,
                    'points.leaf_offsets': offsets})
    tensors.update(material.get('frame_items', {}))
    return tensors



def _memorize_regions(images, coords, feats, extractor, cfg, out_path, resume, progress, t0):
    material = region_material(images, coords, feats, extractor, cfg, progress)
    head_cfg, buffer, partition = material['head_cfg'], material['buffer'], material['partition']
    t_buffer = time.perf_counter() - t0
    init, init_info = resolve_head_init(cfg.head_init, 'region_classifier', head_cfg,
                                        cfg.backbone, extractor.weights_sha256)
    if progress:
        print(f'head start: {init_info["head_init"]}', file=sys.stderr)
    model, stats = train_region_head(
        buffer, head_cfg, cfg.iterations, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed,
        extractor.device, checkpoint=out_path + '.ckpt', resume=resume, progress=progress,
        init_state=init, precision=cfg.precision)
    train_seconds = time.perf_counter() - t0
    summary = {'train_seconds': round(train_seconds, 2),
               'buffer_seconds': round(t_buffer, 2),
               'buffer_samples': int(buffer['desc'].shape[0]),
               'map_points': int(len(material['points'][0])),
               'leaves_used': int(np.count_nonzero(np.isfinite(partition.leaf_centres[:, 0]))),
               'precision': stats.pop('precision'),
               **init_info,
               **{k: round(v, 4) for k, v in stats.items()}}
    return region_tensors(material, model), head_cfg, summary


def localizer_defaults(cfg):
    """Query settings stored in a new map (of ``cfg.head``)."""
    if cfg.head == 'landmark_detector':
        if cfg.landmark_format < 2:
            # A frame sees tens of landmarks, not thousands of keypoints: fewer inliers suffice.
            return LocalizerConfig(min_inliers=12)
        # Keypoints compare with every landmark a softmax gives 1 % or more. The covariance
        # floor is 1.5 cm: the median error is about 1.2 cm, not 1.0 (NEES 2.0 at dev-20).
        return LocalizerConfig(min_inliers=12, min_landmark_confidence=0.01,
                               covariance_floor_m=0.015)
    return LocalizerConfig(head_precision='auto')


def _camera_record(frame_root):
    path = os.path.join(frame_root, CAMERA_RECORD) if frame_root else ''
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_map(out_path, tensors, head_cfg, summary, extractor, cfg, frames, frame_root,
              retrieval_ref):
    cfg_dict = asdict(cfg)
    camera = _camera_record(frame_root)
    stem = os.path.splitext(os.path.basename(out_path))[0]
    manifest = {
        'name': cfg.name or stem,
        'frame_id': cfg.frame_id,
        'head_type': cfg.head,
        'scene_reloc_version': __version__,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'backbone': {'name': cfg.backbone, 'weights_sha256': extractor.weights_sha256,
                     'weights_path': extractor.weights_path,
                     'descriptor_dim': extractor.descriptor_dim,
                     'runtime': extractor.runtime},
        'head': {'config': head_cfg.to_dict()},
        'localizer': localizer_defaults(cfg).to_dict(),
        'training': cfg_dict,
        'frames': {'root': os.path.abspath(frame_root) if frame_root else '',
                   'stems': [f.stem for f in frames]},
        # How the frames' images were made (camera.json of bag-to-dataset), where said.
        **({'camera': camera} if camera else {}),
        # Poses refined while memorizing (world_from_cam, row-major 4x4 per stem).
        **({'refined_poses': {f.stem: np.round(f.pose, 9).tolist() for f in frames}}
           if any(f.pose is not None for f in frames) else {}),
        'metrics': summary,
        'retrieval': retrieval_ref,
    }
    summary['map_megabytes'] = round(save_scene_map(out_path, tensors, manifest), 3)
    if os.path.exists(out_path + '.ckpt'):
        os.remove(out_path + '.ckpt')
    return summary
