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

"""Released backbone weights: where they live locally and how to fetch them (SHA-256 checked)."""

import hashlib
import os
import shutil
import tempfile
import urllib.request

ALIKE_URL = 'https://github.com/Shiaoming/ALIKE/raw/main/models/{name}.pth'
# SHA-256 of the released files (BSD-3-Clause, Zhao et al.).
KNOWN_SHA256 = {
    'alike-t': 'c0840329a6b88518d914b03af2be956f5607055a389ba17441db02bb94f7d12e',
    'alike-n': '8bd4789272eec779be280f8fc1007608ff604241440a0a3377c1559199412ee3',
    'alike-l': 'bed5fbbf352ab1c3e92e2241881f8b84edce949984fa23bc7f2517eab93938a0',
}


def weights_dir():
    """``$SCENE_RELOC_WEIGHTS`` or ``~/.cache/scene_reloc/weights``."""
    return os.environ.get('SCENE_RELOC_WEIGHTS',
                          os.path.join(os.path.expanduser('~'), '.cache', 'scene_reloc',
                                       'weights'))


def default_weights_path(name):
    return os.path.join(weights_dir(), f'{name}.pth')


def fetch_weights(name, out_dir=None, url=None, sha256=None, timeout=60):
    """
    Download weights and check their SHA-256 before putting them in place.

    :return: path of the verified file.
    :raises ValueError: unknown name without url/sha256, or a checksum mismatch (the partial
        download is deleted, nothing is left at the destination).
    """
    if url is None and name not in KNOWN_SHA256:
        raise ValueError(f'no known download for {name!r}; known: {sorted(KNOWN_SHA256)}')
    url = url or ALIKE_URL.format(name=name)
    sha256 = sha256 or KNOWN_SHA256.get(name)
    if not sha256:
        raise ValueError(f'no SHA-256 to check {url} against: pass --sha256')
    out_dir = out_dir or weights_dir()
    os.makedirs(out_dir, exist_ok=True)
    dest = os.path.join(out_dir, f'{name}.pth')
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(url, timeout=timeout) as r:
            while chunk := r.read(1 << 16):
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != sha256:
            raise ValueError(f'SHA-256 mismatch for {url}: got {h.hexdigest()}, expected '
                             f'{sha256}; the file was not kept')
        shutil.move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
