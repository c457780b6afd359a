"""brainsnn: deep spiking networks as Brian2 equations, trained by STDP, gradient descent or conversion."""
from setuptools import find_packages, setup

setup(
    name="brainsnn",
    version="0.2.0",
    description=(
        "Deep spiking neural networks with BackRes connections, stochastic softmax and "
        "hybridization (Panda, Aketi & Roy), as Brian2 equations with a PyTorch engine"
    ),
    python_requires=">=3.12",
    packages=find_packages(include=["brainsnn", "brainsnn.*"]),
    install_requires=[
        "brian2==2.10.1",
        "numpy",
        "scipy",
        "h5py",
        "matplotlib",
        "sympy",
        "torch>=2.4",
        "Pillow",
        "tqdm",
    ],
    extras_require={
        "gpu": ["brian2cuda==1.0b1"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["brainsnn=brainsnn.cli:main"]},
)
