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
Pairing each image with the CameraInfo of its stamp, as image_transport's CameraSubscriber.

Image and CameraInfo come on two subscriptions whose callbacks run in either order. Using "the
latest CameraInfo" for an image mixes them up exactly when it matters: an image whose own
CameraInfo is invalid would be localized with the previous calibration. Cameras stamp both
alike; once that is seen (``paired``), the worker waits up to ``wait_s`` for the CameraInfo of
the image's stamp, refuses the image when that CameraInfo was invalid, and uses its calibration
when it was valid. A camera that stamps them differently keeps "the latest" behaviour.
Pure Python (no rclpy): the node feeds it from its callbacks.
"""

from collections import deque, OrderedDict
import threading
import time


class CalibrationPairing:
    """Remember the recent CameraInfo stamps (valid: with their model; invalid: the reason)."""

    def __init__(self, wait_s=0.1, remember=64):
        self.wait_s = wait_s
        self.paired = False
        self._cond = threading.Condition()
        self._seen = OrderedDict()           # stamp -> CameraModel, or the reason it was bad
        self._images = deque(maxlen=remember)
        self._remember = remember
        self._newest = 0

    def on_info(self, stamp_ns, model, why=''):
        """Record the CameraInfo of ``stamp_ns``: its model, or None and why it was invalid."""
        with self._cond:
            self._seen[stamp_ns] = model if model is not None else why
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            self._newest = max(self._newest, stamp_ns)
            self.paired = self.paired or stamp_ns in self._images
            self._cond.notify_all()

    def on_image(self, stamp_ns):
        with self._cond:
            self._images.append(stamp_ns)
            self.paired = self.paired or stamp_ns in self._seen

    def calibration_for(self, stamp_ns, fallback):
        """
        Return the camera model to use for an image, or raise ValueError saying why none.

        :param fallback: the latest valid model when the image arrived (unpaired cameras).
        """
        with self._cond:
            if self.paired:
                deadline = time.monotonic() + self.wait_s
                while self._newest < stamp_ns and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
            own = self._seen.get(stamp_ns)
        if isinstance(own, str):
            raise ValueError(f'the CameraInfo stamped with this image was invalid ({own})')
        return own if own is not None else fallback

    def reset(self):
        with self._cond:
            self._seen.clear()
            self._images.clear()
            self._newest = 0
            self.paired = False
