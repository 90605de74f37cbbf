from setuptools import find_namespace_packages, find_packages, setup

setup(
    name="uamix-fairseq",
    version="0.1.0",
    description=(
        "uaMix-MAE: contrastive tuning of pretrained AudioMAE encoders with "
        "unsupervised audio mixtures, as a fairseq plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # hydra_plugins/ (a namespace package) lets Hydra know the plugin's config dataclasses
    # before it composes a config, so every field takes a plain key=value.
    packages=(find_packages(include=["uamix_fairseq", "uamix_fairseq.*"])
              + find_namespace_packages(include=["hydra_plugins.*"])),
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        # PyPI's fairseq 0.12.2 does not install on Python 3.11; this build is
        # fairseq main (Jan 2024) plus the dataclass fix, import name `fairseq`.
        "fairseq-fixed==0.12.3.1",
        "soundfile>=0.12",
        "numpy>=1.21",
        "tensorboardX>=2.6",
        "sentencepiece>=0.1.99",
        # Evaluation: progress bars, logistic regression / t-SNE / AP reference, plots.
        "tqdm>=4.60",
        "scikit-learn>=1.2",
        "matplotlib>=3.5",
        "scipy>=1.7",  # Student-t intervals (already pulled in by scikit-learn)
    ],
    extras_require={
        # kaldi-native-fbank is only a reference implementation for the tests;
        # pytest-xdist runs the suite on two processes (half the wall-clock on 2 cores).
        "test": ["pytest>=7", "pytest-xdist>=3", "kaldi-native-fbank>=1.19"],
    },
    entry_points={
        "console_scripts": [
            "uamix-manifest=uamix_fairseq.manifest:main",
            "uamix-export=uamix_fairseq.tools.export:main",
            "uamix-prepare=uamix_fairseq.prepare.cli:main",
            "uamix-embed=uamix_fairseq.tools.export_embeddings:main",
            "uamix-plot-tsne=uamix_fairseq.tools.tsne:main",
            "uamix-fewshot=uamix_fairseq.evaluation.fewshot:main",
            "uamix-probe=uamix_fairseq.evaluation.probe:main",
        ],
    },
)
