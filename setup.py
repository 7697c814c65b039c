"""waprov packaging: static metadata; the runtime dependencies are fixed (design.md)."""

from setuptools import setup

setup(
    name="waprov",
    version="0.1.0",
    description="Provisioning agent for Azure Linux VMs, a drop-in for WALinuxAgent's provisioning",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=["waprov"],
    scripts=["bin/waprov"],
    install_requires=[
        "configobj",
        "requests",
        "defusedxml",
        "psutil",
        'crypt-r; python_version >= "3.13"',
    ],
)
