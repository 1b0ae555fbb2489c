# Sourced by the scripts/gpu_*.sh tools after they cd to the repository root and set $root:
# CUDA on PATH, the unpacked Debian packages of DEPS_DIR (default .deps: on the GPU machine,
# ../shared/scripts/device-deps.sh, then scripts/device-icu.sh) in cmake_args and on the
# library path, and the mamba-random options of the published shapes.
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
deps=${DEPS_DIR:-$root/.deps}
cmake_args=(-G Ninja -DMAMBA_CUDA=ON)
if [ -d "$deps/usr" ]; then
  cmake_args+=(-DCMAKE_PREFIX_PATH="$deps/usr" -DICU_ROOT="$deps/usr")
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi

shape_args() {  # mamba-random options for a published shape
  case $1 in
    mamba-130m) echo "--arch mamba --d-model 768 --n-layer 24 --n-vocab 50280" ;;
    mamba-1.4b) echo "--arch mamba --d-model 2048 --n-layer 48 --n-vocab 50280" ;;
    mamba-2.8b) echo "--arch mamba --d-model 2560 --n-layer 64 --n-vocab 50280" ;;
    mamba2-2.7b) echo "--arch mamba2 --d-model 2560 --n-layer 64 --n-vocab 50288" \
                      "--d-state 128 --head-dim 64" ;;
    *) echo "unknown shape $1" >&2; return 1 ;;
  esac
}
