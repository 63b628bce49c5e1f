"""xgir: explain image classifiers and use the explanations to correct them."""

from xgir.errors import XgirError

__version__ = "0.1.0"
__all__ = ["XgirError", "__version__"]
