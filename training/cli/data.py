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
The data commands of ``scene-reloc``: synthetic scenes, corpora and ROS 2 bags.

make-synthetic, make-corpus, dataset-to-bag, euroc-to-bag, bag-to-dataset, replay-eval,
play.
"""

import json
import os
import sys

from scene_reloc_training.cli.common import add_recording_arguments, FRAMES_HELP, recording_kwargs


def add_parsers(sub):
    p = sub.add_parser('make-synthetic', help='render a synthetic posed RGB-D scene',
                       description='Render a textured synthetic room along a smooth camera '
                       'path, in the 7-Scenes layout, with memorize.txt and query.txt frame '
                       'lists. Deterministic by seed.')
    p.add_argument('--out', required=True, help='folder to write')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--memorize', type=int, default=20, help='frames to memorize')
    p.add_argument('--query', type=int, default=50, help='query frames')
    p.add_argument('--trajectory-frames', type=int, default=300,
                   help='instants along the camera path (the frames are picked among them)')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--query-lighting', action='store_true',
                   help='render query frames under changed lighting')

    add_corpus_parser(sub)

    p = sub.add_parser('dataset-to-bag', help='write posed RGB-D frames as a ROS 2 bag',
                       description='Write a posed RGB-D folder as a ROS 2 bag (MCAP or sqlite3) '
                       'with /camera/image/compressed (or /camera/image), /camera/camera_info, '
                       '/camera/depth/image, /tf (odom->camera odometry and map->camera_gt '
                       'ground truth) and /ground_truth/pose. Needs no ROS install.')
    p.add_argument('--data', required=True, help='posed RGB-D folder (7-Scenes layout)')
    p.add_argument('--frames', required=True, help=FRAMES_HELP)
    p.add_argument('--out', required=True, help='bag to write (a folder; must not exist)')
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--rate', type=float, default=30.0, help='frame rate of the stamps (Hz)')
    p.add_argument('--camera-frame', default='camera', help='frame_id of the images')
    p.add_argument('--raw', action='store_true', help='sensor_msgs/Image rgb8 instead of jpeg')
    p.add_argument('--no-depth', action='store_true', help='leave out the depth topic')
    p.add_argument('--quiet', action='store_true')

    p = sub.add_parser('euroc-to-bag', help='write an EuRoC MAV camera and its ground truth as '
                       'a ROS 2 bag', description='Write one camera of the EuRoC MAV dataset '
                       '(cam0/data.csv, cam0/data/*.png, cam0/sensor.yaml, groundtruth_body.txt) '
                       'as a ROS 2 bag (MCAP or sqlite3) the way a robot records it: '
                       '/cam0/image_raw (mono8), /cam0/camera_info (plumb_bob with the real '
                       'distortion), /tf world->body from every ground-truth sample and '
                       '/tf_static body->cam0 (T_BS), each message logged at its own stamp. '
                       'Prints the bag path and the counts of images, ground-truth samples and '
                       'images inside the ground-truth time span (the ones /tf can pose). '
                       'Needs no ROS install.')
    p.add_argument('--data', required=True, metavar='FOLDER',
                   help='EuRoC folder holding cam0/ and groundtruth_body.txt')
    p.add_argument('--out', required=True, metavar='BAG',
                   help='bag to write (a folder; must not exist)')
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--quiet', action='store_true', help='no progress bar')

    p = sub.add_parser('bag-to-dataset', help='turn a robot recording into posed frames',
                       description='Turn a ROS 2 bag with images, CameraInfo and /tf (from SLAM '
                       'or odometry) into a folder of posed frames that scene-reloc memorize '
                       'reads: keyframes chosen by motion, undistorted with the CameraInfo (as '
                       'the node undistorts queries), camera.json recording the source camera, '
                       'frames.txt with the stems. Without --depth-topic no depth is written '
                       '(both scene models triangulate). This is how a robot teaches itself its '
                       'own scene.')
    p.add_argument('--bag', required=True)
    p.add_argument('--out', required=True, help='folder to write (must not exist or be empty)')
    add_recording_arguments(p)
    p.add_argument('--quiet', action='store_true')

    p = sub.add_parser('replay-eval', help='localize every image of a bag, compare with its '
                       'ground truth', description='Run the localizer over a bag offline '
                       '(deterministic), compare with the ground truth (/ground_truth/pose, or '
                       'TF map->camera_gt), write metrics.json, a report with plots and '
                       'the bag estimates/ (estimated poses and TF; Foxglove opens '
                       'estimates/estimates.mcap, ros2 bag play the folder).')
    p.add_argument('--bag', required=True)
    p.add_argument('--map', required=True, help='scene map file')
    p.add_argument('--out', default='out/replay', help='folder for the results')
    p.add_argument('--image-topic', help='default: found among the usual names')
    p.add_argument('--camera-info-topic', help='default: found among the usual names')
    p.add_argument('--gt-topic', default='/ground_truth/pose')
    p.add_argument('--gt-frame', help='ground truth from /tf instead: the pose of this frame in '
                   '--world-frame (e.g. cam0 of a motion-capture recording)')
    p.add_argument('--world-frame', default='map', help="the map's frame in the bag's /tf")
    p.add_argument('--every', type=int, default=1, help='replay every N-th image only')
    p.add_argument('--offset', type=int, default=0,
                   help='...starting at this one (--every 2 --offset 1: the odd images)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--backbone-weights', metavar='PATH')
    p.add_argument('--quiet', action='store_true')

    p = sub.add_parser('play', help='publish a bag over DDS with its original timing',
                       description='Publish a bag over DDS like ros2 bag play (needs rclpy).')
    p.add_argument('--bag', required=True)
    p.add_argument('--rate', type=float, default=1.0, help='speed factor')
    p.add_argument('--clock', action='store_true', help='publish /clock (use_sim_time)')
    p.add_argument('--loop', action='store_true')
    p.add_argument('--wait', type=float, default=0.0, metavar='S',
                   help='wait up to S seconds for a first subscriber before playing')
    p.add_argument('--wait-topic', action='append', default=[], metavar='TOPIC',
                   help='with --wait: wait until this published topic (after --remap) has a '
                   'subscriber (repeatable), e.g. the camera topic of the node under test')
    p.add_argument('--remap', action='append', default=[], metavar='FROM:=TO',
                   help='publish topic FROM as TO, e.g. /tf:=/robot1/tf (repeatable; as '
                        'ros2 bag play --remap)')
    p.add_argument('--duration', type=float, default=0.0, metavar='S',
                   help='stop after S seconds (with --loop); 0: play to the end')


def cmd_dataset_to_bag(a):
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc_training.data.bags import dataset_to_bag
    folder = PosedFrameFolder(a.data)
    frames = folder.frames(parse_frame_list(a.frames, folder))
    stamps = dataset_to_bag(frames, a.out, a.storage, a.rate, a.camera_frame,
                            compressed=not a.raw, depth=not a.no_depth, progress=not a.quiet)
    print(json.dumps({'bag': a.out, 'frames': len(stamps), 'storage': a.storage}, indent=2))


def cmd_euroc_to_bag(a):
    from scene_reloc_training.data.euroc import euroc_to_bag
    print(json.dumps(euroc_to_bag(a.data, a.out, a.storage, progress=not a.quiet), indent=2))


def cmd_bag_to_dataset(a):
    from scene_reloc_training.data.bag_frames import bag_to_dataset
    out = bag_to_dataset(a.bag, a.out, progress=not a.quiet, **recording_kwargs(a))
    print(json.dumps(out, indent=2))


def cmd_replay_eval(a):
    from scene_reloc_training.data.replay import run
    metrics, index, out_bag = run(a.bag, a.map, a.out, a.backbone_weights, a.device,
                                  progress=not a.quiet, image_topic=a.image_topic,
                                  info_topic=a.camera_info_topic, gt_topic=a.gt_topic,
                                  gt_frame=a.gt_frame, world_frame=a.world_frame,
                                  every=a.every, offset=a.offset)
    print(json.dumps(metrics, indent=2))
    print(f'report: {index}\nestimates (bag folder): {out_bag}', file=sys.stderr)


def cmd_play(a):
    import rclpy

    from scene_reloc.ros.bag_player import play
    rclpy.init()
    try:
        remap = {}
        for r in a.remap:
            src, sep, dst = r.partition(':=')
            if not sep or not src.startswith('/') or not dst.startswith('/'):
                sys.exit(f'--remap {r!r}: expected /FROM:=/TO with absolute topic names')
            remap[src] = dst
        n = play(a.bag, a.rate, a.clock, a.loop, wait_for_subscribers=a.wait,
                 log=lambda s: print(s, file=sys.stderr), remap=remap,
                 duration=a.duration, wait_topics=a.wait_topic)
        print(json.dumps({'bag': a.bag, 'published': n}))
    finally:
        rclpy.try_shutdown()


def add_corpus_parser(sub):
    p = sub.add_parser('make-corpus', help='render a corpus of synthetic scenes with splits',
                       description='Render many varied synthetic scenes (room size, furniture, '
                       'textures, lighting) for backbone pretraining, and write corpus.json with '
                       'train / val / test splits (test scenes are held out of pretraining). '
                       'Posed folders of your own join with --add.')
    p.add_argument('--out', required=True, help='folder to write')
    p.add_argument('--scenes', type=int, default=100, help='synthetic scenes to render')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--val-fraction', type=float, default=0.1)
    p.add_argument('--test-fraction', type=float, default=0.2)
    p.add_argument('--memorize', type=int, default=20, help='frames to memorize per scene')
    p.add_argument('--query', type=int, default=30, help='query frames per scene')
    p.add_argument('--width', type=int, default=320)
    p.add_argument('--height', type=int, default=240)
    p.add_argument('--add', nargs='*', default=[], metavar='DIR',
                   help='real posed folders (train split; linked, not copied). With an existing '
                   'OUT/corpus.json they are added to it and nothing is rendered')


def cmd_make_synthetic(a):
    from tqdm import tqdm

    from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
    mem, query = write_synthetic_scene(
        a.out, a.seed, a.memorize, a.query, a.trajectory_frames, a.width, a.height,
        query_lighting=a.query_lighting,
        progress=lambda it: tqdm(it, desc='rendering', unit='frame', file=sys.stderr))
    print(json.dumps({'out': a.out, 'memorize': os.path.join(a.out, 'memorize.txt'),
                      'query': os.path.join(a.out, 'query.txt'), 'n_memorize': len(mem),
                      'n_query': len(query)}, indent=2))


def cmd_make_corpus(a):
    from scene_reloc_training.learn.corpus import add_real_scenes, make_corpus
    existing = os.path.join(a.out, 'corpus.json')
    if os.path.exists(existing):
        if not a.add:
            sys.exit(f'{existing} exists: pass --add DIR... to add real scenes to it, or '
                     'another --out')
        m = add_real_scenes(existing, a.add, a.memorize, a.query)
    else:
        m = make_corpus(a.out, a.scenes, a.seed, a.val_fraction, a.test_fraction, a.memorize,
                        a.query, a.width, a.height, a.add)
    counts = {k: sum(s['split'] == k for s in m['scenes']) for k in ('train', 'val', 'test')}
    real = [s['name'] for s in m['scenes'] if 'real' in s]
    print(json.dumps({'corpus': existing, **counts, 'real_scenes': real}, indent=2))


HANDLERS = {'make-synthetic': cmd_make_synthetic, 'make-corpus': cmd_make_corpus,
            'dataset-to-bag': cmd_dataset_to_bag, 'euroc-to-bag': cmd_euroc_to_bag,
            'bag-to-dataset': cmd_bag_to_dataset,
            'replay-eval': cmd_replay_eval, 'play': cmd_play}
