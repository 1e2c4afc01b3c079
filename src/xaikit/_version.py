"""The version of xaikit (one place: the package, the command line and run manifests read it here)."""

__version__ = "0.1.0"
