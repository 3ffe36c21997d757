"""facet: a from-scratch, educational reference implementation of FACET-VLM.

A 3D face scan (or a 4D sequence of scans) is rendered from several viewpoints by facet's own
rasterizer, a CLIP-style ViT encodes each view, the views are fused across viewpoints (CVSA) and
under the guidance of emotion prompts (MTGF), and the face is classified by its similarity to
the prompts. The modules, in the order data flows through them (read them in this order; each
imports only modules above it):

    meshes and files
      mesh.py         Mesh (vertices, triangles, uv, texture, landmarks) and `normalize`
      vrml.py         VRML 2.0 text <-> Mesh (BU-3DFE, BU-4DFE scans)
      meshio.py       load_mesh for every format, .bnt range scans, .bnd/.lm3 landmarks, and
                      the atomic writer every file of facet goes through
    rendering
      camera.py       look-at cameras, projections, (yaw, pitch) view lists
      raster.py       the z-buffer rasterizer: triangles -> Fragments (face, depth, barycentrics);
                      rasterize_reference, the same in a per-triangle loop (read it first)
      render.py       interpolation, shading, render_views (mesh -> V images), render settings,
                      contact sheets
    data
      layouts.py      the benchmark layouts and label tables; index_dataset -> Samples
      view_cache.py   every scan rendered once, stored as uint8 on disk
      datasets.py     protocols and subject-independent splits; the torch Datasets
    built-in faces (ICT-FaceKit)
      face_model.py   the morphable face: people, their metadata, landmarks, skin
      expressions.py  FACS action units -> blendshapes, emotion prototypes, styles, timing
      scanner.py      a face -> a scan: crop, pose, noise, holes, its own triangulation
      synth.py        built-in datasets, written in the benchmarks' layouts
    CLIP
      tokenizer.py    CLIP's byte-level BPE
      transformer.py  pre-LN attention blocks
      clip.py         the ViT image tower, the causal text tower, CLIP
    FACET-VLM
      prompts.py      class words, templates, metadata prompts, prompt ensembles
      captions.py     sentences about scans from their ground truth (CLIP pretraining)
      fusion.py       CVSA, MTGF, temporal fusion, and their composition ViewFusion
      model.py        FacetVLM: encode views and classes, fuse, score; ZeroShotCLIP; CentredCLIP
                      (pretraining from scratch, folded into plain CLIP weights)
      losses.py       classification, consistency, AffectVLM's loss, CLIP's InfoNCE
      augment.py      mixed view augmentation
    running
      config.py       TrainConfig, presets, the --key=value parser, checks
      runtime.py      DDP, devices, threads, memory policy, run-folder lock
      checkpoint.py   checkpoints, every record checked; OpenAI-layout CLIP weights, read safely
      reports.py      metrics, predictions.csv, figures
      loop.py         the training steps (FACET-VLM, CLIP), train / evaluate epochs, schedules
      build.py        data, tokenizer, model and objective from a config; the pretraining set
      explain.py      one scan or sequence: prediction, per-view predictions, weights,
                      saliency, a picture sheet (evaluate.py SCAN, app.py)
      uploads.py      files sent to the app, written safely (zips unpacked with limits)

Shapes, batch-first everywhere: B batch, T frames (1 for a static scan), V views, K classes,
P prompts per class, L text tokens, N image tokens, C width, E joint embedding size, H x W
image, F triangles. A batch of views is (B, T, V, 3, H, W).
"""
import os

# torch's OpenMP threads spin-wait between parallel regions by default; next to another busy
# process they fight it for its core (render_views measured 82 views/s idle, 26 beside a
# one-thread torch job). PASSIVE lets them sleep: 78 idle, 52 beside it (AMD EPYC, 2 threads).
# OpenMP reads the variable once, when torch loads it, so the entry points import facet before
# torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
