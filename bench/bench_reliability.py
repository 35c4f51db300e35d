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
The reliability sweep: fuzzed inputs, damaged map files, a lifecycle loop and a soak.

1. Conversion layer: fuzzed Image / CompressedImage / CameraInfo messages (the hypothesis
   strategies of test/fuzz_messages.py), each class counted: refused with a message, accepted,
   crashed (any other exception).
2. Map loader: a real map truncated at many points, bit-flipped, and with its header edited
   (absurd shapes, offsets, dtypes): refused / loaded / crashed.
3. Lifecycle: the node in this process, configure / activate / deactivate / cleanup N times
   (as Nav2's lifecycle up-down test): threads, subscriptions, timers, publishers and resident
   memory after the first cycle and after the last.
4. Soak: the node in its own process under a 30 Hz camera for ``--soak`` seconds mixing good
   frames, bad frames (damaged images, invalid CameraInfo), /tf gaps, and a map switch every
   ``--switch-every`` seconds; resident memory sampled every 10 s; the node's own accounting
   checked (every frame received is localized, rejected with a reason, rate-limited, refused as
   bad, or dropped by the keep-latest worker), and the map->odom republish rate while no fix
   comes.

  python bench/bench_reliability.py --out out/reliability              # the README's table
  python bench/bench_reliability.py --soak 60 --cycles 20 --fuzz 300   # a quick look
"""

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time

from device_arg import add_device_argument, checked_device
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
sys.path.insert(0, os.path.join(ROOT, 'test'))


# ---------------------------------------------------------------------------- scene and maps
def make_maps(work):
    """Make a synthetic scene (640x480 queries) and memorize it twice (seeds 0, 1)."""
    from scene_reloc_training.cli import main as cli
    scene = os.path.join(work, 'scene')
    maps = [os.path.join(work, f'scene-{seed}.map') for seed in (0, 1)]
    if all(os.path.isfile(m) for m in maps):   # made by an earlier run: reuse
        return maps, scene, os.path.join(scene, 'query.txt')
    cli(['make-synthetic', '--out', scene, '--seed', '0', '--memorize', '20', '--query', '30'])
    maps = []
    for seed in (0, 1):
        path = os.path.join(work, f'scene-{seed}.map')
        cli(['memorize', '--data', scene, '--frames', os.path.join(scene, 'memorize.txt'),
             '--out', path, '--device', DEVICE['name'], '--seed', str(seed), '--quiet'])
        maps.append(path)
    return maps, scene, os.path.join(scene, 'query.txt')


# ---------------------------------------------------------------------------- 1. conversions
def fuzz_conversions(n):
    from fuzz_messages import run_conversion_fuzz  # test/fuzz_messages.py
    return run_conversion_fuzz(n)


# ---------------------------------------------------------------------------- 2. loader
def _damaged_files(data, n, rng):
    """Yield (class, bytes) of damaged versions of a safetensors map file."""
    hlen = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + hlen])
    for i in range(n):
        kind = ('truncated', 'bit_flip', 'header_edit')[i % 3]
        if kind == 'truncated':
            yield kind, data[:rng.randrange(0, len(data))]
        elif kind == 'bit_flip':
            b = bytearray(data)
            for _ in range(rng.choice((1, 2, 8))):
                pos = rng.randrange(0, len(b)) if rng.random() < 0.5 else \
                    rng.randrange(0, 8 + hlen)
                b[pos] ^= 1 << rng.randrange(8)
            yield kind, bytes(b)
        else:
            h = json.loads(json.dumps(header))
            key = rng.choice([k for k in h if k != '__metadata__'])
            edit = rng.randrange(5)
            if edit == 0:
                h[key]['shape'] = [2 ** 40] + h[key]['shape'][1:]
            elif edit == 1:
                h[key]['data_offsets'] = [0, 2 ** 62]
            elif edit == 2:
                h[key]['dtype'] = rng.choice(['F64', 'I8', 'BOOL', 'X9'])
            elif edit == 3:
                meta = h['__metadata__']
                mk = rng.choice(list(meta))
                meta[mk] = meta[mk][:rng.randrange(len(meta[mk]))]
            else:
                del h[key]
            body = json.dumps(h).encode()
            yield kind, struct.pack('<Q', len(body)) + body + data[8 + hlen:]


def fuzz_loader(map_path, n, seed=0):
    """Load damaged versions of ``map_path``: count refused (with a message) / loaded / crashed."""
    from scene_reloc.artifact import ArtifactError
    from scene_reloc.scene_map import load_scene_map
    data = open(map_path, 'rb').read()
    original = load_scene_map(map_path)
    rng = random.Random(seed)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'damaged.map')
        for kind, blob in _damaged_files(data, n, rng):
            c = counts.setdefault(kind, {'tried': 0, 'refused': 0, 'loaded': 0,
                                         'loaded_changed': 0, 'crashes': 0})
            c['tried'] += 1
            with open(path, 'wb') as f:
                f.write(blob)
            try:
                got = load_scene_map(path)
                # A flip in a checksum key's name (the file then reads as an older format
                # without one) loads the untouched content: fine. Changed content is not.
                c['loaded'] += 1
                c['loaded_changed'] += int(not _same(got, original))
            except ArtifactError as e:
                c['refused'] += 1 if str(e) else 0
                c['crashes'] += 0 if str(e) else 1
                continue
            except Exception:  # noqa: BLE001 - counted: anything else is a crash
                c['crashes'] += 1
    return counts


def _same(a, b):
    (ma, ta), (mb, tb) = a, b
    return json.dumps(ma, sort_keys=True) == json.dumps(mb, sort_keys=True) and \
        set(ta) == set(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta)


# ---------------------------------------------------------------------------- 3. lifecycle
def rss_mb(pid='self'):
    with open(f'/proc/{pid}/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1024


def lifecycle_loop(map_path, cycles):
    """Configure / activate / deactivate / cleanup the node ``cycles`` times in this process."""
    import gc

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from scene_reloc.ros.reloc_node import RelocNode
    rclpy.init()
    node = RelocNode(parameter_overrides=[
        Parameter('scene_map', Parameter.Type.STRING, map_path),
        Parameter('device', Parameter.Type.STRING, DEVICE['name']),
        Parameter('autostart', Parameter.Type.BOOL, False)])
    exe = SingleThreadedExecutor()
    exe.add_node(node)
    spin = threading.Thread(target=exe.spin, daemon=True)
    spin.start()

    def census():
        gc.collect()
        return {'threads': threading.active_count(),
                **{k: len(list(getattr(node, k))) for k in ('subscriptions', 'publishers',
                                                             'timers', 'services')},
                'rss_mb': round(rss_mb(), 1)}

    first, failures, t0, trace = None, 0, time.monotonic(), []
    try:
        for i in range(cycles):
            results = [step() for step in (node.trigger_configure, node.trigger_activate,
                                           node.trigger_deactivate, node.trigger_cleanup)]
            failures += int(any(r != TransitionCallbackReturn.SUCCESS for r in results))
            if (i + 1) % 25 == 0:
                trace.append((i + 1, round(rss_mb(), 1)))
            if i == 0:
                first = census()
        last = census()
    finally:
        exe.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return {'cycles': cycles, 'failed_cycles': failures, 'after_first': first,
            'after_last': last, 'rss_mb_every_25_cycles': trace,
            'seconds_per_cycle': round((time.monotonic() - t0) / cycles, 3)}


# ---------------------------------------------------------------------------- 4. soak
BAD_CLASSES = ('truncated_image', 'unknown_encoding', 'zero_size', 'wrong_step',
               'nan_camera_info')


def soak_camera(data, frames, rate, duration, map_from_odom, tf_gap_every, tf_gap_len, out):
    """Publish the soak's camera; print the JSON of what was sent."""
    from array import array

    import rclpy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from scene_reloc.geometry import invert_pose
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc.ros.messages import tf_msg
    folder = PosedFrameFolder(data)
    fr = folder.frames(parse_frame_list(frames, folder))
    rclpy.init()
    node = rclpy.create_node('soak_camera')
    pub_img = node.create_publisher(Image, 'image', 10)
    pub_info = node.create_publisher(CameraInfo, 'camera_info', 10)
    pub_tf = node.create_publisher(TFMessage, '/tf', 100)
    odom_from_map = invert_pose(map_from_odom)
    imgs = []
    for f in fr:
        rgb = f.load_color()
        info = CameraInfo(height=rgb.shape[0], width=rgb.shape[1], distortion_model='plumb_bob')
        info.k = [float(v) for v in f.K.ravel()]
        info.header.frame_id = 'camera'
        imgs.append((array('B', rgb.tobytes()), rgb.shape, info, f.load_pose()))
    sent = {'good': 0, 'good_in_tf_gap': 0, **{c: 0 for c in BAD_CLASSES}, 'bad_stamps': {}}
    t0, i = time.monotonic(), 0
    while time.monotonic() - t0 < duration:
        buf, (h, w, _), info, pose = imgs[i % len(imgs)]
        stamp = node.get_clock().now().to_msg()
        t = time.monotonic() - t0
        in_gap = (t % tf_gap_every) >= tf_gap_every - tf_gap_len
        if not in_gap:
            pub_tf.publish(tf_msg(stamp, 'odom', 'camera', odom_from_map @ pose))
        m = Image(height=h, width=w, encoding='rgb8', step=w * 3)
        m.header.frame_id = 'camera'
        m.header.stamp = info.header.stamp = stamp
        bad = BAD_CLASSES[(i // 10) % len(BAD_CLASSES)] if i % 10 == 5 else None
        out_info = info
        if bad == 'truncated_image':
            m.data = buf[:len(buf) // 2]
        elif bad == 'unknown_encoding':
            m.encoding, m.data = 'yuv444p', buf
        elif bad == 'zero_size':
            m.height = m.width = m.step = 0
        elif bad == 'wrong_step':
            m.step, m.data = w * 3 + 7, buf
        else:
            m.data = buf
        if bad == 'nan_camera_info':
            out_info = CameraInfo(height=h, width=w, distortion_model='plumb_bob')
            out_info.k = [float('nan')] * 9
            out_info.header = info.header
        pub_info.publish(out_info)
        pub_img.publish(m)
        if bad:
            sent[bad] += 1
            sent['bad_stamps'][stamp.sec * 10**9 + stamp.nanosec] = bad
        else:
            sent['good'] += 1
            sent['good_in_tf_gap'] += int(in_gap)
        i += 1
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    # A last good CameraInfo, so the node does not end on an invalid one.
    pub_info.publish(imgs[0][2])
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    with open(out, 'w') as f:   # a file: 18000 stamps would fill a pipe nobody reads yet
        json.dump(sent, f)


def soak(maps, data, frames, duration, rate, switch_every, map_from_odom):
    from bench_node import proc_sample, start_node
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage
    env, node = start_node(maps[0], 150 + os.getpid() % 30, ['diagnostics_period:=0.5'],
                           device=DEVICE['name'])
    rclpy.init()
    lst = rclpy.create_node('soak_listener')
    poses, m2o, diags = [], [], []
    pose_stamps = []

    def on_pose(m):
        poses.append(time.monotonic())
        pose_stamps.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)

    lst.create_subscription(PoseWithCovarianceStamped, '/reloc_node/pose', on_pose, 100)
    lst.create_subscription(
        TFMessage, '/tf', lambda m: m2o.extend(
            time.monotonic() for t in m.transforms if t.child_frame_id == 'odom'),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    lst.create_subscription(DiagnosticArray, '/diagnostics',
                            lambda m: diags.append({kv.key: kv.value for s in m.status
                                                    for kv in s.values}), 10)
    client = lst.create_client(SetParameters, '/reloc_node/set_parameters')
    deadline = time.time() + 120
    while time.time() < deadline and not any(d.get('state', '').startswith('active')
                                             for d in diags):
        rclpy.spin_once(lst, timeout_sec=0.1)
    sent_path = os.path.join(os.path.dirname(os.path.dirname(data)), 'soak_camera.json')
    cam = subprocess.Popen([sys.executable, __file__, '--soak-camera', '--data', data,
                            '--frames', frames, '--rate', str(rate), '--soak', str(duration),
                            '--out', sent_path], env=env)
    samples, switches, t_start = [], {'asked': 0, 'accepted': 0}, time.monotonic()
    next_sample, next_switch = t_start + 10, t_start + switch_every
    pending = None
    while cam.poll() is None:
        rclpy.spin_once(lst, timeout_sec=0.02)
        now = time.monotonic()
        if now >= next_sample and node.poll() is None:
            samples.append((now - t_start, *proc_sample(node.pid)))
            next_sample += 10
        if now >= next_switch:
            switches['asked'] += 1
            req = SetParameters.Request(parameters=[Parameter(name='scene_map', value=(
                ParameterValue(type=ParameterType.PARAMETER_STRING,
                               string_value=maps[switches['asked'] % 2])))])
            pending = client.call_async(req)
            next_switch += switch_every
        if pending is not None and pending.done():
            switches['accepted'] += int(pending.result().results[0].successful)
            pending = None
    with open(sent_path) as f:
        sent = json.load(f)
    bad_stamps = {int(k): v for k, v in sent.pop('bad_stamps').items()}
    end = time.monotonic() + 3
    while time.monotonic() < end:
        rclpy.spin_once(lst, timeout_sec=0.05)
    alive = node.poll() is None
    last = diags[-1] if diags else {}
    node.send_signal(2)
    node.wait(20)
    lst.destroy_node()
    rclpy.try_shutdown()
    c = {k: int(last.get(k, 0)) for k in (
        'received', 'localized', 'rejected', 'bad_input', 'undecodable', 'failed', 'held',
        'rate_limited', 'dropped_frames', 'processed_frames', 'bad_camera_info', 'time_jumps')}
    accounted = c['rate_limited'] + c['bad_input'] - c['undecodable'] + c['held'] + \
        c['dropped_frames'] + c['processed_frames']
    # Warm-up: both maps loaded once (switches at 1 and 2 minutes). Resident memory swings by
    # tens of MB with each load (two maps held during a swap), so windows are compared by their
    # medians: the two minutes after warm-up against the last two minutes.
    first = [s[2] for s in samples if 2 * switch_every <= s[0] < 4 * switch_every]
    last_w = [s[2] for s in samples[-12:]]
    # map->odom republish rate in the stretches of >= 1 s without a fix ("lost").
    lost_time, lost_tf = 0.0, 0
    marks = sorted(poses)
    for a, b in zip(marks, marks[1:]):
        if b - a >= 1.0:
            lost_time += b - a
            lost_tf += sum(a < t < b for t in m2o)
    return {
        'duration_s': duration, 'camera_hz': rate, 'sent': sent,
        'node_counts': c, 'accounted': accounted,
        'unaccounted': c['received'] - accounted,
        'processed_identity_ok': c['processed_frames'] == c['localized'] + c['rejected'] +
        c['undecodable'] + c['failed'],
        'poses_heard': len(poses), 'deaths': 0 if alive else 1,
        'bad_poses_published': sum(ns in bad_stamps for ns in pose_stamps),
        'bad_poses_by_class': {c: sum(bad_stamps.get(ns) == c for ns in pose_stamps)
                               for c in BAD_CLASSES},
        'map_switches': switches,
        'rss_mb_after_warmup': round(float(np.median(first)), 1) if first else None,
        'rss_mb_last': round(float(np.median(last_w)), 1) if last_w else None,
        'rss_growth_mb': round(float(np.median(last_w) - np.median(first)), 1)
        if first and last_w else None,
        'rss_mb_max': round(max(s[2] for s in samples), 1) if samples else None,
        'rss_samples': [(round(t), round(m, 1)) for t, _, m in samples],
        'tf_republish_hz_while_lost': round(lost_tf / lost_time, 1) if lost_time else None,
        # Longest silence of map->odom after the first fix (map loads, TF gaps, bad frames).
        'tf_max_gap_s': round(max(np.diff(m2o)), 3) if len(m2o) > 1 else None,
        'lost_seconds': round(lost_time, 1),
    }


# ---------------------------------------------------------------------------- main
def table(res):
    rows = ['| check | tried | refused with a message | crashes | bad poses published | '
            'other |', '|---|---|---|---|---|---|']
    for name, counts in (('conversion', res.get('conversions', {})),
                         ('map loader', res.get('loader', {}))):
        for cls, c in counts.items():
            other = (f'accepted {c["accepted"]} (valid input)' if 'accepted' in c else
                     f'loaded {c["loaded"]}, of which with changed content '
                     f'{c["loaded_changed"]}')
            rows.append(f'| {name}: {cls} | {c["tried"]} | {c["refused"]} | {c["crashes"]} | '
                        f'- | {other} |')
    lc = res.get('lifecycle')
    if lc:
        a, b = lc['after_first'], lc['after_last']
        rows.append(f'| lifecycle cycles | {lc["cycles"]} | - | {lc["failed_cycles"]} failed | - '
                    f'| threads {a["threads"]} -> {b["threads"]}, subscriptions '
                    f'{a["subscriptions"]} -> {b["subscriptions"]}, RSS {a["rss_mb"]} -> '
                    f'{b["rss_mb"]} MB |')
    s = res.get('soak')
    if s:
        bad = sum(v for k, v in s['sent'].items() if k in BAD_CLASSES)
        rows.append(f'| soak {s["duration_s"]:.0f} s at {s["camera_hz"]:.0f} Hz | '
                    f'{s["sent"]["good"]} good + {bad} bad frames | '
                    f'{s["node_counts"]["bad_input"]} bad input, '
                    f'{s["node_counts"]["bad_camera_info"]} bad CameraInfo | '
                    f'{s["deaths"]} deaths | {s["bad_poses_published"]} | RSS (median, '
                    f'minutes 2-4 -> last 2) {s["rss_mb_after_warmup"]} -> {s["rss_mb_last"]} MB '
                    f'(max {s["rss_mb_max"]}), map switches '
                    f'{s["map_switches"]["accepted"]}/{s["map_switches"]["asked"]}, '
                    f'unaccounted frames {s["unaccounted"]}, TF republish while lost '
                    f'{s["tf_republish_hz_while_lost"]} Hz, longest map->odom gap '
                    f'{s["tf_max_gap_s"]} s |')
    return '\n'.join(rows)


DEVICE = {'name': 'cpu'}   # --device: where the maps are memorized and the node runs


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='out/reliability', help='folder for the JSON and table')
    p.add_argument('--fuzz', type=int, default=3000, help='fuzzed messages per class')
    p.add_argument('--loader-cases', type=int, default=600, help='damaged map files')
    p.add_argument('--cycles', type=int, default=200, help='lifecycle cycles')
    p.add_argument('--soak', type=float, default=600.0, help='soak seconds (0: skip)')
    p.add_argument('--rate', type=float, default=30.0, help='soak camera rate (Hz)')
    p.add_argument('--switch-every', type=float, default=60.0, help='seconds between switches')
    p.add_argument('--only', choices=('conversions', 'loader', 'lifecycle', 'soak'),
                   action='append', help='run only these parts (repeatable)')
    p.add_argument('--soak-camera', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--data', help=argparse.SUPPRESS)
    p.add_argument('--frames', help=argparse.SUPPRESS)
    add_device_argument(p)
    a = p.parse_args()
    DEVICE['name'] = checked_device(a.device)
    map_from_odom = np.eye(4)
    map_from_odom[:3, 3] = 0.5, -0.2, 0.0
    if a.soak_camera:
        return soak_camera(a.data, a.frames, a.rate, a.soak, map_from_odom, 30.0, 2.0, a.out)
    parts = a.only or ['conversions', 'loader', 'lifecycle', 'soak']
    os.makedirs(a.out, exist_ok=True)
    maps, scene, frames = make_maps(os.path.join(a.out, 'work'))
    res = {}
    runs = (('conversions', lambda: fuzz_conversions(a.fuzz)),
            ('loader', lambda: fuzz_loader(maps[0], a.loader_cases)),
            ('lifecycle', lambda: lifecycle_loop(maps[0], a.cycles)),
            ('soak', lambda: soak(maps, scene, frames, a.soak, a.rate, a.switch_every,
                                  map_from_odom)))
    for name, run in runs:
        if name not in parts or (name == 'soak' and a.soak <= 0):
            continue
        res[name] = run()
        # Written after each part: a long run that fails late keeps what it measured.
        with open(os.path.join(a.out, 'reliability.json'), 'w') as f:
            json.dump(res, f, indent=2)
        print(f'{name}: {json.dumps(res[name])}', flush=True)
    md = table(res)
    print(md)
    with open(os.path.join(a.out, 'reliability.md'), 'w') as f:
        f.write(md + '\n')


if __name__ == '__main__':
    main()
