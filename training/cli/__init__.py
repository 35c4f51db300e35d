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
``scene-reloc``: memorize a scene, evaluate and use a scene map, make synthetic scenes.

Each sub-command's ``--help`` says what it reads and writes. The names and flags are a contract
that other tools rely on: add, do not rename.
"""

import argparse
import sys

from scene_reloc_training.cli import data, meta, pretrain, retrieval, scene

# Command groups in the order --help lists them; each adds its sub-parsers and handlers.
GROUPS = (scene, data, pretrain, meta, retrieval)

EPILOG = """examples:
  scene-reloc make-synthetic --out /tmp/scene --seed 0
  scene-reloc memorize --data /tmp/scene --frames /tmp/scene/memorize.txt --out /tmp/scene.map
  scene-reloc evaluate --map /tmp/scene.map --data /tmp/scene --frames /tmp/scene/query.txt \\
      --report /tmp/report
  scene-reloc localize --map /tmp/scene.map --intrinsics /tmp/scene/camera-intrinsics.txt \\
      /tmp/scene/frame-000002.color.png
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog='scene-reloc', description='Single-image relocalization in a known scene: '
        'memorize a scene from a few posed RGB-D images, then localize images in it.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    handlers = {name: fn for group in GROUPS for name, fn in group.HANDLERS.items()}
    try:
        handlers[args.command](args)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # DataError, SceneMapError, BackboneError are ValueErrors
        print(f'scene-reloc {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0
