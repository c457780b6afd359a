"""brainsnn: deep spiking networks as Brian2 equations, trained by STDP, gradient descent or
conversion. ``pip install .`` installs the package, its protocols and the ``brainsnn``
command; see README.md."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

setup(
    name="brainsnn",
    version="0.2.10",
    description=(
        "Deep spiking neural networks with backward residual connections, stochastic softmax "
        "and hybrid layers, as Brian2 equations with a PyTorch engine"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    keywords="spiking neural networks, Brian2, STDP, surrogate gradient, ANN-to-SNN conversion",
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
    python_requires=">=3.12",
    packages=find_packages(include=["brainsnn", "brainsnn.*"]),
    install_requires=[
        # brian2 is pinned to the version the test suite runs (CI) and the only one
        # brian2cuda 1.0b1 accepts (the `gpu` extra); brian2 2.10 needs Python >= 3.12.
        "brian2==2.10.1",
        "numpy",
        "scipy",
        "h5py",
        "matplotlib",
        "sympy",
        # a CPU-only build is enough without a GPU: install it first with
        # pip install torch --index-url https://download.pytorch.org/whl/cpu
        "torch>=2.4",
        "Pillow",
        "tqdm",
    ],
    extras_require={
        "gpu": ["brian2cuda==1.0b1"],
        # brainsnn sweep: runs on a LocalCluster, a Dask scheduler or (with dask-jobqueue)
        # SLURM/PBS
        "cluster": ["dask[distributed]"],
        # the ImageNet folder layout (brainsnn.io.imagefolder); pick the wheel built for the
        # installed torch (the CPU one from the PyTorch index where torch is the CPU build)
        "imagenet": ["torchvision"],
        # the test suite covers the optional parts too (sweeps, the ImageNet folder loader)
        "test": ["pytest", "scikit-learn", "dask[distributed]", "torchvision"],
    },
    entry_points={"console_scripts": ["brainsnn=brainsnn.cli:main"]},
)
