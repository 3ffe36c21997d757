"""facet's data wing: files on disk -> meshes -> cached views -> torch datasets.

    vrml.py         VRML 2.0 text <-> Mesh (BU-3DFE, BU-4DFE scans)
    meshio.py       load_mesh for every format, .bnt range scans, .bnd/.lm3 landmarks, size limits
    layouts.py      the benchmarks' folder layouts and label tables; index_dataset -> Samples
    view_cache.py   every scan rendered once (facet.render), stored as uint8 on disk
    datasets.py     protocols, subject-independent splits, the torch Datasets, collate

The core (facet/*.py) needs none of it to define or train the model; it is what turns the
benchmarks' many formats into the one batch layout the core reads: views (B, T, V, 3, H, W).
"""
