"""waprov packaging: static metadata; the runtime dependencies are fixed (design.md)."""

from setuptools import find_packages, setup

setup(
    name="waprov",
    version="0.1.0",
    description="Provisioning agent for Azure Linux VMs, a drop-in for WALinuxAgent's provisioning",
    license="Apache-2.0",
    python_requires=">=3.9",
    # waprov and its subpackages (waprov.steps); the tests and tools are not installed
    packages=find_packages(include=["waprov", "waprov.*"]),
    scripts=["bin/waprov"],
    install_requires=[
        "configobj",
        "requests",
        "defusedxml",
        "psutil",
        'crypt-r; python_version >= "3.13"',
    ],
)
