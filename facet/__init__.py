"""facet: a from-scratch, educational reference implementation of FACET-VLM.

3D/4D faces -> multiview renders (our rasterizer) -> CLIP-style ViT per view -> cross-view and
text-guided fusion -> similarity to emotion prompts. See README.md for the module map.
"""
__version__ = "0.1.0"
