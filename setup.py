from setuptools import find_packages, setup

setup(
    name="eds-jax",
    version="0.1.0",
    description="Energy-Driven Steering (EDS) for LLM safety in JAX/Flax",
    python_requires=">=3.10",
    packages=find_packages(include=["models", "models.*", "eds_jax", "eds_jax.*", "configs"]),
    package_data={"eds_jax.datasets": ["README.md", "own/*.jsonl", "public/*.json", "public/mmlu/*.csv"]},
    py_modules=["steer_decode", "train_ebm"],
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.10",
        "transformers>=4.46",  # AutoConfig + tokenizers only; no torch needed at runtime
        "jinja2>=3.1",  # transformers' apply_chat_template renders the chat template with it
        "tokenizers>=0.20",
        "safetensors>=0.4.5",
        "huggingface_hub>=0.25",
        "numpy>=1.26",
        "ml_dtypes>=0.4",
        "absl-py>=2.0",
        "ml_collections>=0.1.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "gguf": ["gguf>=0.10"],
        # the CPU build of torch lies on disk; any other spec downloads GBs
        "test": ["torch==2.13.0", "accelerate>=1.0", "pytest>=8", "pytest-xdist>=3.5", "gguf>=0.10"],
    },
)
