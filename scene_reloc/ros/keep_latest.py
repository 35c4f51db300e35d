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
Keep-latest processing: a one-slot mailbox and a worker thread.

Camera callbacks hand every frame to :meth:`KeepLatestWorker.submit`, which never blocks; the
worker always takes the newest frame, and a frame replaced before the worker took it is counted
as dropped. Memory is bounded by one pending frame, however slow inference is.
"""

import threading


class KeepLatestWorker:
    """
    Run ``process(item)`` on the newest submitted item, in a thread of its own.

    Exceptions from ``process`` go to ``on_error(item, exc)`` and the worker carries on.
    """

    def __init__(self, process, on_error=None, name='keep-latest'):
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending = None
        self._stop = False
        self.submitted = 0
        self.dropped = 0
        self.processed = 0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item):
        """Offer an item; an item still waiting is replaced (and counted as dropped)."""
        with self._cond:
            self.submitted += 1
            if self._pending is not None:
                self.dropped += 1
            self._pending = item
            self._cond.notify()

    def idle(self):
        """Return True when nothing is pending or running."""
        with self._cond:
            return self._pending is None and not self._busy

    def _run(self):
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, self._pending = self._pending, None
                self._busy = True
            try:
                self._process(item)
            except Exception as e:  # noqa: BLE001 - a bad frame must not end the worker
                if self._on_error is not None:
                    self._on_error(item, e)
            finally:
                with self._cond:
                    self._busy = False
                    self.processed += 1

    def stop(self, timeout=5.0):
        """Stop the thread after the item in progress (pending items are discarded)."""
        with self._cond:
            self._stop = True
            self._pending = None
            self._cond.notify()
        self._thread.join(timeout)
