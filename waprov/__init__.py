"""waprov: a drop-in replacement for the provisioning half of WALinuxAgent."""

__version__ = "0.1.0"
