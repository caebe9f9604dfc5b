# Sourced by the scripts/gpu_session*.sh device calls: the common variables and, on CUDA, the
# device's missing wheels (.whl_gpu/, carried to the device: cc3d, edt, monai, nibabel for its
# Python) installed into /tmp/site and put on PYTHONPATH (ON_GPU=1 then); prints the GPU.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
PY=${PY:-python3}
ON_GPU=0
if [ -d .whl_gpu ] && [ "$DEVICE" = cuda ]; then
    ON_GPU=1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl_gpu/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
