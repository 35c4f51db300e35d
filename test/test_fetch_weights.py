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

"""The download path of fetch-weights, against a local HTTP server serving a file we make."""

import functools
import hashlib
import http.server
import os
import threading

import pytest

from scene_reloc_training.cli import main as cli


@pytest.fixture
def server(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield served, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_download_is_checked_and_kept(server, tmp_path, capsys):
    served, url = server
    payload = os.urandom(300_000)
    (served / 'w.pth').write_bytes(payload)
    out = tmp_path / 'cache'
    sha = hashlib.sha256(payload).hexdigest()
    assert cli(['fetch-weights', 'alike-n', '--url', f'{url}/w.pth', '--sha256', sha,
                '--out-dir', str(out)]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(out / 'alike-n.pth')
    assert open(path, 'rb').read() == payload


def test_checksum_mismatch_keeps_nothing(server, tmp_path, capsys):
    served, url = server
    (served / 'w.pth').write_bytes(b'tampered weights')
    out = tmp_path / 'cache'
    assert cli(['fetch-weights', 'alike-n', '--url', f'{url}/w.pth', '--out-dir',
                str(out)]) == 2
    assert 'SHA-256 mismatch' in capsys.readouterr().err
    assert os.listdir(out) == []  # neither the file nor a partial download


def test_missing_file_and_unknown_name(server, tmp_path, capsys):
    _, url = server
    assert cli(['fetch-weights', 'alike-n', '--url', f'{url}/nope.pth', '--out-dir',
                str(tmp_path)]) == 2
    assert '404' in capsys.readouterr().err
    assert cli(['fetch-weights', 'superpoint', '--out-dir', str(tmp_path)]) == 2
    assert 'no known download' in capsys.readouterr().err
