"""facet's front end for one scan or sequence (app.py, `evaluate.py --ckpt CKPT SCAN ...`).

    explain.py      a checkpoint -> a predictor: prediction, per-view predictions, view weights,
                    saliency, a picture sheet
    uploads.py      files sent to the app, written safely (zips unpacked with limits): the scans
                    they make, one per prediction, or one sequence
    preview.py      a small 3D picture of a mesh (decimated by vertex clustering)
    demo_faces.py   a checkpoint on demo faces of many people, made six ways one change apart
                    (python -m facet.app.demo_faces --ckpt CKPT)
"""
