# Sourced (from the checkout's root) by every GPU command: the bundle in SITE (install_bundle.sh) and this
# checkout, installed with its entry points (vLLM and verl find our plugins through them) into PROJECT (default
# $HOME/project; background.sh gives each named lane its own),
# lead PYTHONPATH; vLLM starts its engine processes by spawn (this process holds CUDA) and skips the FlashInfer
# sampler's JIT warm-up; nothing reaches for the network.
export SITE=${SITE:-$HOME/site}
export PROJECT=${PROJECT:-$HOME/project}
export PYTHONPATH=$PROJECT:$SITE
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_WORKER_MULTIPROC_METHOD=spawn VLLM_ALLOW_INSECURE_SERIALIZATION=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$PROJECT" . \
  || { echo "FAIL install: this checkout did not install into $PROJECT"; return 1 2>/dev/null || exit 1; }
