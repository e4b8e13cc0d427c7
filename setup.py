"""Package metadata for prompt-tuning: soft prompt tuning of frozen T5 in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "gin-config==0.5.0",
    "seqio==0.0.20",
    "tensorflow==2.21.*",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "sentencepiece==0.2.3",
    "safetensors>=0.4",
    "numpy>=2,<3",
    "msgpack>=1.0",
    "tqdm>=4.60",
    "tensorboard>=2.19",  # the event-file writer behind tf.summary
]

EXTRAS = {
    # torch 2.13.0 resolves to the CPU build shipped on the machine; transformers is the
    # independent PyTorch reference our numerics are tested against.
    "test": ["pytest>=8", "torch==2.13.0", "transformers>=5,<6", "peft>=0.17", "psutil>=5",
             "matplotlib>=3.8"],  # matplotlib: the scripts that draw the README's plots
    "gpu": ["jax[cuda12]==0.10.2"],
    "bench": ["torch==2.13.0", "transformers>=5,<6", "peft>=0.17", "psutil>=5"],
}

setuptools.setup(
    name="prompt-tuning",
    version="0.1.0",
    description="Parameter-efficient soft prompt tuning of frozen T5 models in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["prompt_tuning", "prompt_tuning.*"]),
    package_data={"prompt_tuning": ["assets/**/*", "gin/**/*.gin", "configs/*.gin"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
