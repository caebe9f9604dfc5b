"""napari widgets (the only part of the package that imports Qt/napari).

- ``segment.SegmentWidget``: network run in a worker + live T_p/T_r refinement.
- ``distance.DistanceMapWidget``: EDT, scale classes, signed/NI-DM maps, skeletons, branches.
- ``review.TopologyReviewWidget``: metrics, error map, site navigation, CSV/screenshot export.
- ``train.TrainingWidget``: short training runs with a live loss plot.

Helpers: ``_workers`` (threads, progress, cancel, debounce), ``_layers`` (geometry, layer
replacement, pickers), ``_settings`` (persisted defaults). The widgets only call the core.
"""
