#!/bin/sh
# Run HERE (a machine with network), in the repository root, before `bench/gpu_device_check.py` runs on
# the lent GPU machine, where nothing can be fetched: Homeport's dependencies that its image lacks (see
# /work/.library/device/KINDS.md, "Python packages already there"), as wheels for its Python 3.12, and
# bubblewrap (a container's own /dev needs it) as a .deb, all in .whl/ (ignored by git, carried).
set -eu
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_31_x86_64 -d .whl \
    'rich-click<2' 'croniter<8' pytz 'cryptography<51' cffi pycparser uv 'httptools<1' 'uvicorn<1' 'fastapi<1' \
    starlette pydantic pydantic-core annotated-types typing-inspection 'a2wsgi<2' 'websockets<20' 'watchfiles<2'
(cd .whl && apt-get download bubblewrap 2>/dev/null) || echo "no bubblewrap .deb: GPU nodes will not be hidden there"
ls .whl
# Then, on the device (the `run` tool, carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && for f in .whl/*.deb; do dpkg -x "$f" /; done; \
#   PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 bench/gpu_device_check.py
