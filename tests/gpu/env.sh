# Sourced (from the checkout's root) by every GPU command: the bundle in SITE (install_bundle.sh) and this
# checkout, installed with its entry points (vLLM and verl find our plugins through them) into PROJECT_DIR (default
# $HOME/project; background.sh gives each named lane its own),
# lead PYTHONPATH; vLLM starts its engine processes by spawn (this process holds CUDA) and skips the FlashInfer
# sampler's JIT warm-up; nothing reaches for the network.
export SITE=${SITE:-$HOME/site}
export PROJECT_DIR=${PROJECT_DIR:-$HOME/project}
export PYTHONPATH=$PROJECT_DIR:$SITE
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_WORKER_MULTIPROC_METHOD=spawn VLLM_ALLOW_INSECURE_SERIALIZATION=1
# the bundle's commands (ray) are in SITE/bin
export PATH=$SITE/bin:$PATH
# NVLink multicast off, as the lent multi-GPU hosts require, in the harness's engines too (vLLM's symmetric-memory
# all-reduce at tensor-parallel size 2 builds on it); on two-GPU hosts MemTotal starts far below the memory there
# is and grows with use, so Ray's memory monitor, which sizes itself from it, would kill healthy workers
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_ALLREDUCE_USE_SYMM_MEM=0 \
  RAY_memory_monitor_refresh_ms=${RAY_memory_monitor_refresh_ms:-0}
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$PROJECT_DIR" . \
  || { echo "FAIL install: this checkout did not install into $PROJECT_DIR"; return 1 2>/dev/null || exit 1; }
