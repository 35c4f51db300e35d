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
Publish a bag over DDS with its original timing, like ``ros2 bag play``.

The stored CDR bytes are published as they are (no deserialisation). ``/tf_static`` and topics
recorded as transient-local are published transient-local and reliable; the rest reliable with a
queue of 10 (a best-effort subscriber matches a reliable publisher). With ``clock`` it publishes
``/clock`` at about 40 Hz for subscribers using ``use_sim_time``.
"""

import importlib
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from scene_reloc.ros.messages import ns_to_time


def message_class(msgtype):
    """``sensor_msgs/msg/Image`` -> the rclpy message class, or a clear error."""
    pkg, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{pkg}.msg'), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f'message type {msgtype} is not installed in this environment') from e


def _latched(conn):
    qos = getattr(conn.ext, 'offered_qos_profiles', None) or []
    return conn.topic == '/tf_static' or any(
        getattr(q, 'durability', None) == QosDurability.TRANSIENT_LOCAL for q in qos)


def play(bag, rate=1.0, clock=False, loop=False, topics=None, node_name='scene_reloc_player',
         wait_for_subscribers=0.0, log=print, remap=None, duration=0.0, wait_topics=()):
    """
    Play ``bag``; returns the number of messages published. Needs ``rclpy.init()`` done.

    :param rate: playback speed factor.
    :param topics: only these topics (default: all).
    :param remap: {bag topic: published topic}, e.g. {'/tf': '/robot1/tf'}.
    :param duration: with ``loop``, stop after this many seconds (0: never).
    :param wait_for_subscribers: seconds to wait, before playing, for a first subscriber to any
        topic (then one more second for the others to be discovered); 0: do not wait.
    :param wait_topics: published topic names that must each have a subscriber before playing
        (within ``wait_for_subscribers``), e.g. the camera a node under test reads.
    """
    if rate <= 0:
        raise ValueError(f'rate must be positive, got {rate}')
    node = rclpy.create_node(node_name)
    count = 0
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:
                raise ValueError(f'{bag}: none of the topics {topics} are in it')
            pubs = {}
            for c in conns:
                latched = _latched(c)
                qos = QoSProfile(depth=10 if not latched else 100,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                                 else DurabilityPolicy.VOLATILE)
                pubs[c.id] = node.create_publisher(message_class(c.msgtype),
                                                   (remap or {}).get(c.topic, c.topic), qos)
            clock_pub = node.create_publisher(Clock, '/clock', 10) if clock else None
            # Wait for a first subscriber, then a second for the rest of discovery: a bag
            # usually carries topics nobody listens to (depth, ground truth).
            by_name = {p.topic_name: p for p in pubs.values()}
            unknown = [t for t in wait_topics if t not in by_name]
            if unknown:
                raise ValueError(f'wait topics {unknown} are not published from {bag}; it '
                                 f'publishes {sorted(by_name)}')
            deadline = time.monotonic() + wait_for_subscribers

            def waiting():
                if wait_topics:
                    return any(by_name[t].get_subscription_count() == 0 for t in wait_topics)
                return all(p.get_subscription_count() == 0 for p in pubs.values())
            while wait_for_subscribers and time.monotonic() < deadline and waiting():
                time.sleep(0.05)
            if wait_for_subscribers:
                # Then until every subscriber the graph knows of is matched by our publishers
                # (an image reader is often matched seconds after /tf's), steady for 1 s.
                stable_since = time.monotonic()
                end = max(deadline, stable_since + 1.0)
                while time.monotonic() < end:
                    now = time.monotonic()
                    if any(p.get_subscription_count() < node.count_subscribers(p.topic_name)
                           for p in pubs.values()):
                        stable_since = now
                    elif now - stable_since >= 1.0:
                        break
                    time.sleep(0.05)
            start = time.monotonic()
            while True:
                count += _play_once(reader, conns, pubs, clock_pub, rate)
                if not loop or (duration and time.monotonic() - start >= duration):
                    break
                log(f'{bag}: looping')
    finally:
        node.destroy_node()
    return count


def _play_once(reader, conns, pubs, clock_pub, rate):
    start_wall, start_bag, last_clock, n = time.monotonic(), None, 0.0, 0
    for conn, ns, raw in reader.messages(connections=conns):
        if start_bag is None:
            start_bag = ns
        due = start_wall + (ns - start_bag) * 1e-9 / rate
        while True:
            now = time.monotonic()
            if clock_pub is not None and now - last_clock >= 0.025:
                sim = start_bag + int((now - start_wall) * rate * 1e9)
                clock_pub.publish(Clock(clock=ns_to_time(min(sim, ns))))
                last_clock = now
            if now >= due:
                break
            time.sleep(min(due - now, 0.025))
        pubs[conn.id].publish(bytes(raw))
        n += 1
    return n

