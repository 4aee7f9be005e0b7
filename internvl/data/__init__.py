"""Data (layer 1): image opening and transforms, dynamic tiling and video frames, the synthetic image set, and
the readers (with their synthetic writers) of the dataset formats several apps share. Imports only the core
modules (``errors``, ``fileio``)."""
