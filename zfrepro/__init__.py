"""zfrepro: a runnable, tested reproduction of Zeiler & Fergus (2013),
*Visualizing and Understanding Convolutional Networks* (arXiv 1311.2901).

Importing the package has no side effects: no downloads, no global torch or
matplotlib settings. Submodules are imported on demand::

    from zfrepro.models import zfnet, describe
    from zfrepro.datasets import image_folder
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
