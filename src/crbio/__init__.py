"""crbio: Ségur-conformant CR-Bio documents from validated laboratory results."""

__version__ = "0.1.0"
