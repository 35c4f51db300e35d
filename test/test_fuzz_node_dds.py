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
The node over real DDS under fuzzed camera messages (issue 13, reliability sweep).

The node runs in its own process with a real map; a few hundred Image, CameraInfo and
CompressedImage messages drawn from the strategies of fuzz_messages.py (bad, odd and valid) go
to it, with a valid CameraInfo around the bad ones. Every image is black, so nothing can be
localized: the node must stay up, publish no pose and no map TF, fail no frame with an
unexpected error, and say on /diagnostics what was wrong.
"""

import array
import os
import time

from fuzz_messages import (
    camera_info_cases,
    compressed_cases,
    draw_cases,
    frame_cases,
    image_cases,
    publishable,
)
import pytest
from ros_harness import Listener, ros_env, start_node, stop
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

DOMAIN = 150 + os.getpid() % 50   # test_node_dds 40-89, colcon 90-99, nav2 100-149
PARAMS = {'device': 'cpu', 'qos_reliability': 'reliable', 'qos_depth': 50,
          'publish_mode': 'map_to_camera', 'image_timeout': 0.0, 'publish_markers': False}


@pytest.fixture
def listener():
    lst = Listener(DOMAIN)
    yield lst
    lst.close()


def _black(msg):
    """Zero an image's pixels (keeping its size and header): nothing in it can be localized."""
    if isinstance(msg, Image):
        msg.data = array.array('B', bytes(len(msg.data)))
    return msg


def _valid_info(width=160, height=120):
    info = CameraInfo(width=width, height=height)
    info.k = [144.0, 0.0, 79.5, 0.0, 144.0, 59.5, 0.0, 0.0, 1.0]
    return info


def _values(listener):
    """Return the key/values of the node's last /diagnostics status."""
    with listener.lock:
        if not listener.diags:
            return {}
        return {kv.key: kv.value for kv in listener.diags[-1].status[0].values}


class Feed:
    """Publish to the node with increasing stamps, a little apart (the worker keeps up)."""

    def __init__(self, listener, image_type, image_topic):
        self.pub_img = listener.node.create_publisher(image_type, image_topic, 50)
        self.pub_info = listener.node.create_publisher(CameraInfo, '/camera_info', 50)
        self.ns = 1_000_000_000
        self.images = self.infos = 0

    def send(self, msg, gap=0.004):
        self.ns += 10_000_000
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.ns, 1_000_000_000)
        msg.header.frame_id = 'camera'
        if isinstance(msg, CameraInfo):
            self.pub_info.publish(msg)
            self.infos += 1
        else:
            self.pub_img.publish(msg)
            self.images += 1
        time.sleep(gap)


def _run(listener, tmp_path, map_path, transport, feed_all):
    """Start the node, wait for it, feed it, wait until it took everything in, stop it."""
    params = dict(PARAMS, image_transport=transport, scene_map=map_path)
    node = start_node(ros_env(DOMAIN), params, tmp_path / 'node.log')
    try:
        assert listener.wait_for(lambda: any('waiting for images' in m for m in
                                             listener.diag_messages()), 60), \
            open(tmp_path / 'node.log').read()
        image_type, topic = (CompressedImage, '/image/compressed') if transport == 'compressed' \
            else (Image, '/image')
        feed = Feed(listener, image_type, topic)
        assert listener.wait_for(lambda: feed.pub_img.get_subscription_count() > 0 and
                                 feed.pub_info.get_subscription_count() > 0, 10)
        feed_all(feed)
        # Wait until the node has taken everything in (its received count stops moving).
        last, still = None, 0
        deadline = time.time() + 30
        while time.time() < deadline and still < 3:
            time.sleep(0.5)
            now = _values(listener).get('received')
            still = still + 1 if now == last else 0
            last = now
        assert node.poll() is None, 'the node must survive fuzzed input: ' + \
            open(tmp_path / 'node.log').read()[-3000:]
        return feed, _values(listener), listener.diag_messages()
    finally:
        stop(node)


def _check(listener, feed, values, messages):
    assert not listener.poses, 'a pose from black or bad frames'
    assert not any(t.header.frame_id == 'map' for m in listener.tfs for t in m.transforms)
    crashes = [m for m in messages if 'processing failed' in m or 'unexpected error' in m]
    assert not crashes, crashes[:5]
    assert values.get('failed', '0') == '0', values
    bad = [m for m in messages if m.startswith('bad input')]
    assert len(set(bad)) >= 10, messages[-20:]
    assert int(values.get('received', 0)) > 0.5 * feed.images, values
    return bad


def test_fuzzed_raw_images_and_camera_infos(small_map, listener, tmp_path):
    images = [c for c in draw_cases(image_cases(max_side=48), 200, 1) if publishable(c)]
    infos = [c for c in draw_cases(camera_info_cases(), 100, 2) if publishable(c)]
    frames = [c for c in draw_cases(frame_cases(), 40, 3) if publishable(c)]
    good = _black(Image(height=120, width=160, encoding='rgb8', step=480,
                        data=bytes(120 * 160 * 3)))

    def feed_all(feed):
        for i in range(max(len(images), len(infos), len(frames))):
            if i < len(images):  # as a driver would: a CameraInfo for the declared size
                img = images[i].msg
                feed.send(_valid_info(img.width, img.height))
                feed.send(_black(img))
            if i < len(infos):  # a bad (or odd) CameraInfo, then a black frame under it
                feed.send(infos[i].msg)
                feed.send(good)
            if i < len(frames):  # sizes that change mid-stream
                info, msgs = frames[i].msg
                feed.send(info)
                for m in msgs:
                    feed.send(_black(m))

    feed, values, messages = _run(listener, tmp_path, small_map[0], 'raw', feed_all)
    bad = _check(listener, feed, values, messages)
    text = ' '.join(bad)
    for words in (('unsupported image encoding',), ('does not match',), ('no CameraInfo',),
                  ('no valid K', 'distortion', 'roi', 'binning'), ('image step',)):
        assert any(w in text for w in words), (words, sorted(set(bad))[:30])
    assert int(values.get('bad_camera_info', 1)) > 0, values


def test_fuzzed_compressed_images(small_map, listener, tmp_path):
    cases = [c for c in draw_cases(compressed_cases(black=True), 150, 4) if publishable(c)]

    def feed_all(feed):
        feed.send(_valid_info(64, 48))
        for case in cases:
            feed.send(case.msg)

    feed, values, messages = _run(listener, tmp_path, small_map[0], 'compressed',
                                   feed_all)
    bad = _check(listener, feed, values, messages)
    assert any('cannot decode compressed image' in m for m in bad), sorted(set(bad))[:30]
