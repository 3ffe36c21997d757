"""facet: a from-scratch, educational reference implementation of FACET-VLM.

A 3D face scan (or a 4D sequence of scans) is rendered from several viewpoints by facet's own
rasterizer, a CLIP-style ViT encodes each view, the views are fused across viewpoints (CVSA) and
under the guidance of emotion prompts (MTGF), and the face is classified by its similarity to
the prompts. The core, in the order data flows through it (read it in this order; each module
imports only modules above it):

    mesh.py         Mesh (vertices, triangles, uv, texture, landmarks) and `normalize`
    rendering
      camera.py     look-at cameras, projections, (yaw, pitch) view lists
      raster.py     the z-buffer rasterizer: triangles -> Fragments (face, depth, barycentrics);
                    rasterize_reference, the same in a per-triangle loop (read it first)
      render.py     interpolation, shading, render_views (mesh -> V images), render settings
    CLIP
      tokenizer.py  CLIP's byte-level BPE
      transformer.py  pre-LN attention blocks
      clip.py       the ViT image tower (OpenAI's patches, or a convolutional stem), the causal
                    text tower, CLIP
    FACET-VLM
      prompts.py    class words, templates, metadata prompts, ensembles; ClassPrompts
      fusion.py     CVSA, MTGF, temporal fusion, and their composition ViewFusion
      model.py      FacetVLM: encode views and classes, fuse, score; zero-shot CLIP; CentredCLIP
                    (pretraining from scratch, folded into plain CLIP weights)
      losses.py     classification, consistency, AffectVLM's loss, CLIP's InfoNCE
      augment.py    mixed view augmentation
    training
      objective.py  one training step as one module (FACET-VLM's, CLIP pretraining's)
      loop.py       fit: the one training loop (resume, DDP, checkpoints); evaluate by prompts
      reports.py    metrics, predictions.csv, figures
      checkpoint.py checkpoints, every record checked; OpenAI-layout CLIP weights, read safely
      atomic.py     the atomic writer every file goes through
    running
      config.py     TrainConfig, presets, the --key=value parser, checks
      runtime.py    DDP, devices, threads, memory policy, run-folder lock
      build.py      a run's data, tokenizer, model, prompts and objective from its config
      results.py    the paper's five benchmarks; the results table of finished run folders

and its wings, one level deep, each with its own map:

    data/           the benchmarks' file formats and layouts, the view cache, torch datasets
    faces/          the built-in faces: ICT-FaceKit, FACS, a scanner, dataset writers, captions
    app/            one scan in: prediction, view weights, saliency, a sheet; uploads; preview

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

__version__ = "0.5.0"
