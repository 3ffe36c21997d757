"""facet's front end for one scan or sequence (app.py, `evaluate.py --ckpt CKPT SCAN ...`).

    explain.py      a checkpoint -> a predictor: prediction, per-view predictions, view weights,
                    saliency, a picture sheet
    uploads.py      files sent to the app, written safely (zips unpacked with limits): the scans
                    they make, one per prediction, or one sequence
    preview.py      a small 3D picture of a mesh (decimated by vertex clustering)
"""
