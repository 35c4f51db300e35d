#!/usr/bin/env bash
# Install ROS 2 from PyPI into a venv and build tf2_msgs (not on PyPI) against it.
# Usage: tools/setup_ros.sh VENV. Idempotent: skips the build when TFMessage already imports.
# Facts behind each step: ../shared/ROS2_FROM_PYPI.md (and the README's "ROS 2" section).
set -euo pipefail
venv=$(cd "${1:?usage: setup_ros.sh VENV}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
py="$venv/bin/python"

"$py" -m pip install --quiet --disable-pip-version-check -r "$here/../requirements-ros.txt"
if "$py" -c 'from tf2_msgs.msg import TFMessage' 2>/dev/null; then
  exit 0
fi
for tool in cmake ninja g++; do
  command -v "$tool" >/dev/null || {
    echo "setup_ros.sh: $tool is missing: apt-get install cmake ninja-build g++ python3-dev" >&2
    exit 1
  }
done
# The wheels' generated CMake files name the include folders of the machine they were built on:
# point them at this venv's Python and numpy headers.
py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
grep -rl --include='*__rosidl_generator_pyExport.cmake' '/opt/python/cp311-cp311' \
    "$venv" 2>/dev/null | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
         "$f"
done
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
export AMENT_PREFIX_PATH="$venv"
cmake -S "$here/tf2_msgs" -B "$build" -G Ninja -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$py" >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log" >&2; exit 1; }
cmake --install "$build" >/dev/null
"$py" -c 'from tf2_msgs.msg import TFMessage' \
  || { echo "setup_ros.sh: tf2_msgs built but does not import" >&2; exit 1; }
echo "tf2_msgs built into $venv"
