#!/usr/bin/env bash
# Prepare a run of benchmarks/device_check.py on a bare device machine (Python 3.12, PyTorch,
# torchvision, transformers, OpenCV and Pillow installed; no package index, no ../shared): put
# tinycoco and wheels of the dependencies its image lacks in .device/ (ignored by git, carried
# with the working tree), then print the command to run there with .device carried.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf .device && mkdir -p .device/whl
cp -r ../shared/data/tinycoco .device/tinycoco
platforms=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
    case $n in 2014) platforms+=(--platform manylinux2014_x86_64) ;;
               1) platforms+=(--platform manylinux1_x86_64) ;;
               *) platforms+=(--platform "manylinux_${n}_x86_64") ;; esac
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .device/whl \
    pycocotools==2.0.11 shapely==2.2.0 albumentationsx==2.5.1 albucore==0.2.21 \
    stringzilla==5.3.2 numkong pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5
du -sh .device
cat <<'CMD'
run (carry [".device"], timeout_s 400):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && nvidia-smi -L && python3 benchmarks/device_check.py --data .device/tinycoco --out $OUT/device.json 2>&1 | tee $OUT/device.log
CMD
