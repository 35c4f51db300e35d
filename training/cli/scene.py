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
The one-scene commands of ``scene-reloc``: teach a scene, then use its map.

memorize, teach (a recording straight to a map), evaluate, localize, select-landmarks,
fetch-weights.
"""

import json
import os
import sys

import numpy as np

from scene_reloc_training.cli.common import (
    add_common,
    add_recording_arguments,
    add_runtime,
    FRAMES_HELP,
    recording_kwargs,
)


def add_parsers(sub):
    from scene_reloc.backbones import BACKBONES
    p = sub.add_parser('memorize', help='memorize a scene from posed RGB-D frames into a map',
                       description='Memorize a scene: partition its 3D points, train the region '
                       'classifier on frozen backbone features, write the scene map '
                       '(safetensors + manifest). Prints a JSON summary with train_seconds and '
                       'map_megabytes.')
    p.add_argument('--data', required=True, help='posed RGB-D folder (7-Scenes layout)')
    p.add_argument('--frames', required=True, help=FRAMES_HELP)
    p.add_argument('--out', required=True, metavar='MAP', help='scene map file to write')
    add_memorize_arguments(p)
    p.add_argument('--resume', action='store_true',
                   help='continue head training from MAP.ckpt left by an interrupted run')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    add_common(p)

    p = sub.add_parser('teach', help='memorize a scene straight from a robot recording (bag)',
                       description='bag-to-dataset and memorize in one command: keyframes of '
                       'the recording, posed from its /tf and undistorted with its CameraInfo, '
                       'are written to MAP.frames/ (kept, so the map can be rebuilt or '
                       'evaluated), then memorized into MAP. Without --depth-topic both scene '
                       'models triangulate their 3D points from the known poses; '
                       '--refine-poses corrects SLAM/odometry poses first. Prints what was '
                       'taken from the bag and the memorize summary as JSON.')
    p.add_argument('--bag', required=True, help='rosbag2 folder (mcap or sqlite3)')
    p.add_argument('--out', required=True, metavar='MAP', help='scene map file to write')
    p.add_argument('--frames-dir', help='where the posed frames go (default: MAP.frames next '
                   'to the map; must not exist)')
    add_recording_arguments(p)
    add_memorize_arguments(p)
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    add_common(p)

    p = sub.add_parser('evaluate', help='localize held-out frames and compare with their poses',
                       description='Localize every listed frame with the map (or site), compare '
                       'with the '
                       'frame poses, print the metrics JSON; optionally write it and a report '
                       'with plots (trajectory top view, error CDFs, latency).')
    p.add_argument('--map', required=True, help='scene map file')
    p.add_argument('--data', required=True, help='posed RGB-D folder with the query frames')
    p.add_argument('--frames', required=True, help=FRAMES_HELP)
    p.add_argument('--json', metavar='OUT', help='write the metrics JSON here')
    p.add_argument('--report', metavar='DIR', help='write a report (index.html, report.png, '
                   'queries.csv) here')
    p.add_argument('--refinement', choices=['keypoints', 'none'],
                   help="override the map's refinement (none = leaf centres, plain SRC)")
    p.add_argument('--expect-map', metavar='NAME',
                   help='with a site: the map these frames belong to ("" for frames of no '
                   'map); adds map-selection counts to the metrics')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    add_common(p)
    add_runtime(p)

    p = sub.add_parser('localize', help='print one pose per image as JSON lines',
                       description='Localize images; prints one JSON object per image with '
                       'success, reason, world_from_cam (4x4), position, orientation_xyzw '
                       '(ROS order), covariance (6x6 row-major, ROS convention), inliers.')
    p.add_argument('--map', required=True, help='scene map file')
    p.add_argument('--intrinsics', required=True, help='text file with the 3x3 K of the images')
    p.add_argument('images', nargs='+', metavar='IMAGE')
    add_common(p)
    add_runtime(p)

    p = sub.add_parser('select-landmarks', help='select salient 3D landmarks and plot them',
                       description='Select the landmarks a landmark_detector map would use '
                       '(depth-lifted keypoints, occlusion-tested visibility, saliency, greedy '
                       'coverage) and plot them over the scene with the memorized cameras. '
                       'Prints a JSON summary with the coverage per frame.')
    p.add_argument('--data', required=True, help='posed RGB-D folder (7-Scenes layout)')
    p.add_argument('--frames', required=True, help=FRAMES_HELP)
    p.add_argument('--out', required=True, metavar='PNG', help='plot to write')
    p.add_argument('--backbone', default='handcrafted', choices=sorted(BACKBONES))
    p.add_argument('--landmarks', type=int, default=0,
                   help='landmarks to select (default 0: 50 per frame, 300 to 5000)')
    p.add_argument('--csv', help='also write the landmarks (x, y, z, saliency, views) here')
    add_common(p)

    p = sub.add_parser('fetch-weights', help='download released backbone weights (SHA-256 '
                       'checked)', description='Download weights into the cache folder '
                       '($SCENE_RELOC_WEIGHTS or ~/.cache/scene_reloc/weights), verifying '
                       'their SHA-256; prints the path.')
    p.add_argument('name', help='alike-t, alike-n or alike-l')
    p.add_argument('--out-dir', help='folder to put the file in')
    p.add_argument('--url', help='download from here instead of the upstream location')
    p.add_argument('--sha256', help='expected SHA-256 (required with --url for unknown names)')


def add_memorize_arguments(p):
    """Add what decides a memorized map (memorize, teach)."""
    from scene_reloc.backbones import BACKBONES
    p.add_argument('--backbone', default='handcrafted', choices=sorted(BACKBONES),
                   help='; '.join(f'{k}: {v}' for k, v in sorted(BACKBONES.items())))
    p.add_argument('--head', default='region_classifier',
                   choices=['region_classifier', 'landmark_detector'],
                   help='region_classifier: hierarchical partition + region classifier (SRC); '
                        'landmark_detector: salient 3D landmarks + heatmap head (SLD)')
    p.add_argument('--landmarks', type=int, default=0,
                   help='landmark_detector: landmarks to select (default 0: 50 per memorized '
                   'frame, 300 to 5000)')
    p.add_argument('--landmark-observations', type=int, default=0,
                   help='landmark_detector: descriptors stored per landmark (default 0: one per '
                   '16 frames, 3 to 8)')
    p.add_argument('--landmark-heads', type=int, default=1,
                   help='landmark_detector: networks in the ensemble (landmarks split evenly)')
    p.add_argument('--landmark-format', type=int, choices=[1, 2], default=2,
                   help='landmark_detector: 2 (per-cell landmark classifiers, default) or 1 '
                   '(3x3 convolutional sigmoid heatmaps, the earlier head)')
    p.add_argument('--landmark-loss', choices=['focal', 'mse'], default='focal',
                   help='landmark_detector, format 1: heatmap loss (focal: CenterNet; mse: the '
                   'SLD release)')
    p.add_argument('--landmark-iterations', type=int, default=2000,
                   help='landmark_detector: head training iterations')
    p.add_argument('--iterations', type=int, default=1000,
                   help='region_classifier: head training iterations')
    p.add_argument('--head-init', default='auto', metavar='auto|none|PATH',
                   help='region_classifier: start of the head. auto: a meta-learned start '
                   '(scene-reloc meta-train; shipped ones included) that fits the backbone, '
                   'its weights and the head shape, else random; none: random; PATH: that file')
    p.add_argument('--augmentations', type=int, default=8,
                   help='augmented views per frame in the feature buffer')
    p.add_argument('--k1', type=int, default=64, help='level-1 regions')
    p.add_argument('--k2', type=int, default=64, help='level-2 sub-regions per region')
    p.add_argument('--points-per-leaf', type=int, default=8,
                   help='3D map points kept per leaf for the in-leaf refinement')
    p.add_argument('--edge-margin', type=int, default=3,
                   help='drop depth this close (pixels) to depth discontinuities; 0 keeps all')
    p.add_argument('--depth-offset', default='0,0,0', metavar='X,Y,Z',
                   help='depth camera centre in the colour camera frame, metres, for depth not '
                        'registered to colour (see README)')
    p.add_argument('--name', default='',
                   help="the map's name in a site and in the node's messages (default: the "
                   "file's stem)")
    p.add_argument('--frame-id', default='map', help="TF frame of the map's coordinates")
    p.add_argument('--retrieval-model', default='auto', metavar='auto|PATH',
                   help="model the map's retrieval database is built with (sites use it to "
                   'pick a map): auto = a trained one that fits the backbone (scene-reloc '
                   'train-retrieval; shipped ones included), else the built-in untrained GeM')
    p.add_argument('--precision', choices=['auto', 'bf16', 'fp32'], default='auto',
                   help='head training arithmetic. auto: bf16 autocast where the CPU (AVX512-'
                   'BF16, AMX, Arm BF16) or GPU computes it natively, 2-3x faster; fp32 '
                   'elsewhere')
    add_runtime(p)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--refine-poses', action='store_true',
                   help="refine the frames' poses (from SLAM or odometry, centimetres off) by "
                   'bundle adjustment over triangulated keypoint tracks before memorizing '
                   "(intrinsics fixed, the poses' own frame and scale kept)")


def memorize_config(a):
    """MemorizeConfig from :func:`add_memorize_arguments`' options."""
    from scene_reloc_training.memorize.memorize_scene import MemorizeConfig
    try:
        offset = tuple(float(v) for v in a.depth_offset.split(','))
    except ValueError:
        offset = ()
    if len(offset) != 3:
        raise ValueError(f'--depth-offset must be X,Y,Z in metres, got {a.depth_offset!r}')
    return MemorizeConfig(backbone=a.backbone, backbone_weights=a.backbone_weights,
                          device=a.device, k1=a.k1, k2=a.k2, iterations=a.iterations,
                          augmentations=a.augmentations, points_per_leaf=a.points_per_leaf,
                          edge_margin=a.edge_margin, depth_offset_m=offset, seed=a.seed,
                          head=a.head, landmarks=a.landmarks,
                          landmark_heads=a.landmark_heads, landmark_loss=a.landmark_loss,
                          landmark_format=a.landmark_format,
                          landmark_observations=a.landmark_observations,
                          landmark_iterations=a.landmark_iterations, head_init=a.head_init,
                          retrieval_model=a.retrieval_model, name=a.name, frame_id=a.frame_id,
                          precision=a.precision, refine_poses=a.refine_poses,
                          runtime=a.runtime)


def cmd_memorize(a):
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc_training.memorize.memorize_scene import memorize
    folder = PosedFrameFolder(a.data)
    frames = folder.frames(parse_frame_list(a.frames, folder))
    cfg = memorize_config(a)
    print(f'memorizing {len(frames)} frames from {a.data} with backbone {a.backbone}, head '
          f'{a.head}', file=sys.stderr)
    summary = memorize(frames, a.out, cfg, resume=a.resume, progress=not a.quiet,
                       frame_root=a.data)
    print(json.dumps({'map': a.out, **summary}, indent=2))


def cmd_teach(a):
    from scene_reloc.posed_frames import PosedFrameFolder
    from scene_reloc_training.data.bag_frames import bag_to_dataset
    from scene_reloc_training.memorize.memorize_scene import memorize
    cfg = memorize_config(a)    # option errors before the bag is read
    frames_dir = a.frames_dir or os.path.splitext(a.out)[0] + '.frames'
    recording = bag_to_dataset(a.bag, frames_dir, progress=not a.quiet, **recording_kwargs(a))
    sk = recording['skipped']
    print(f'from {a.bag}: {recording["frames"]} keyframes of {recording["images"]} images '
          f'(skipped: {", ".join(f"{v} {k}" for k, v in sk.items() if v) or "none"}) '
          f'-> {frames_dir}', file=sys.stderr)
    folder = PosedFrameFolder(frames_dir)
    frames = folder.frames(folder.stems())
    print(f'memorizing {len(frames)} frames with backbone {a.backbone}, head {a.head}',
          file=sys.stderr)
    summary = memorize(frames, a.out, cfg, progress=not a.quiet, frame_root=frames_dir)
    print(json.dumps({'map': a.out, 'frames_dir': frames_dir, 'recording': recording,
                      **summary}, indent=2))


def _relocalizer(a):
    from scene_reloc.site import open_localizer
    return open_localizer(a.map, a.backbone_weights, a.device, runtime=a.runtime)


def cmd_evaluate(a):
    from tqdm import tqdm

    from scene_reloc.evaluation import compute_metrics, map_selection, record_query
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc.report import write_report
    folder = PosedFrameFolder(a.data)
    frames = folder.frames(parse_frame_list(a.frames, folder))
    reloc = _relocalizer(a)
    if a.refinement:
        if not hasattr(reloc.config, 'refinement'):
            raise ValueError('--refinement applies to a map, not to a site')
        reloc.config.refinement = a.refinement
    reloc.localize(frames[0].load_color(), frames[0].K)  # warm-up, not timed
    records = [record_query(fr.stem, reloc.localize(fr.load_color(), fr.K), fr.load_pose())
               for fr in tqdm(frames, desc='localizing', disable=a.quiet, unit='image')]
    m = reloc.manifest.get('metrics', {})
    metrics = compute_metrics(records, train_seconds=m.get('train_seconds'),
                              map_megabytes=round(os.path.getsize(a.map) / 1e6, 3))
    if a.expect_map is not None:
        metrics.update(map_selection(records, a.expect_map or None))
    elif hasattr(reloc, 'frame_ids'):      # a site: which map each frame went to, always
        metrics['map_selection'] = map_selection(records, None)['map_selection']
    print(json.dumps(metrics, indent=2))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(metrics, f, indent=2)
    if a.report:
        index = write_report(records, metrics, a.report, title=os.path.basename(a.map))
        print(f'report: {index}', file=sys.stderr)


def cmd_localize(a):
    from scene_reloc.geometry import rotation_to_quaternion_xyzw
    from scene_reloc.posed_frames import DataError, read_color, read_intrinsics
    K = read_intrinsics(a.intrinsics)
    reloc = _relocalizer(a)
    for path in a.images:
        try:
            res = reloc.localize(read_color(path), K)
        except DataError as e:
            print(json.dumps({'image': path, 'map': None, 'success': False,
                              'reason': 'bad_input', 'detail': str(e)}), flush=True)
            continue
        out = {'image': path, 'map': res.map_name, 'success': res.success, 'reason': res.reason,
               'detail': res.detail, 'num_inliers': res.num_inliers,
               'num_correspondences': res.num_correspondences,
               'reprojection_error_px': None if not np.isfinite(res.reprojection_error_px)
               else round(res.reprojection_error_px, 3), 'seconds': round(res.seconds, 4)}
        if res.success:
            T = res.world_from_cam
            out.update(world_from_cam=T.round(6).tolist(), position=T[:3, 3].round(6).tolist(),
                       orientation_xyzw=rotation_to_quaternion_xyzw(T[:3, :3]).round(8).tolist(),
                       covariance=[float(f'{v:.6g}') for v in res.covariance.ravel()])
        print(json.dumps(out), flush=True)


def cmd_select_landmarks(a):
    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc_training.memorize.landmarks import plot_landmarks, select_landmarks
    from scene_reloc_training.memorize.memorize_scene import MemorizeConfig, read_frames
    folder = PosedFrameFolder(a.data)
    frames = folder.frames(parse_frame_list(a.frames, folder))
    cfg = MemorizeConfig(backbone=a.backbone, backbone_weights=a.backbone_weights,
                         device=a.device)
    extractor = FeatureExtractor(cfg.backbone, cfg.backbone_weights, cfg.device)
    _, _, feats, depths = read_frames(frames, extractor, cfg, progress=True)
    poses = [f.load_pose() for f in frames]
    lms = select_landmarks(feats, poses, [f.K for f in frames], depths, a.landmarks)
    plot_landmarks(lms, poses, a.out, title=os.path.basename(os.path.normpath(a.data)))
    if a.csv:
        np.savetxt(a.csv, np.column_stack([lms.xyz, lms.saliency, lms.visible.sum(0)]),
                   delimiter=',', header='x,y,z,saliency,views', comments='')
    lo, med, hi = lms.coverage()
    print(json.dumps({'landmarks': int(len(lms.xyz)), 'plot': a.out,
                      'visible_per_frame': {'min': lo, 'median': med, 'max': hi}}, indent=2))


def cmd_fetch_weights(a):
    from scene_reloc.weights import fetch_weights
    print(fetch_weights(a.name, a.out_dir, a.url, a.sha256))


HANDLERS = {'memorize': cmd_memorize, 'teach': cmd_teach, 'evaluate': cmd_evaluate,
            'localize': cmd_localize,
            'select-landmarks': cmd_select_landmarks, 'fetch-weights': cmd_fetch_weights}
