"""facet's built-in faces: synthetic 3D/4D expression datasets on a real morphable face model.

    face_model.py   ICT-FaceKit (MIT, ict_facekit/): people, their metadata, landmarks, skin
    expressions.py  FACS action units -> blendshapes, emotion prototypes, styles, timing
    scanner.py      a face -> a scan: crop, pose, noise, holes, its own triangulation
    synth.py        the built-in datasets, written in the benchmarks' own layouts
                    (python -m facet.faces.synth --kind bu3dfe|bu4dfe|4dme|bp4d|bosphorus)
    captions.py     sentences about a scan from its ground truth (CLIP pretraining)
    pretraining.py  the captioned pretraining set of new people
    familiarity.py  is a scan like the built-in faces? the "unlike the training faces" flag
    probes.py       the flag's test set: new faces, non-faces, mis-oriented faces
                    (python -m facet.faces.probes: its flag rates)

Everything here writes files the data wing reads like real scans: the core never sees that a
face was generated.
"""
