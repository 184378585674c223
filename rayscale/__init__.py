"""rayscale: a deployment kit for Ray clusters and their scaling curve."""

__version__ = "0.1.0"
