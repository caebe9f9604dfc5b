"""napari-tubular: segment, measure and review tubular structures in 3-D medical volumes.

The core (``io``, ``synthetic``, ``geometry``, ``topology``, ``losses``, ``models``, ``training``,
``inference``) never imports Qt, napari or magicgui; ``_widgets`` is the thin napari layer.
Heavy modules (torch) are imported lazily by the submodules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
