"""One training step's computation as one module: what `facet.loop.fit` optimises.

A step is more than the model: mixed view augmentation, the class prompts, the forward pass and
the loss. Wrapping them in one `nn.Module` gives DDP one thing to wrap, and AffectVLM's learned
margin -- a parameter of the loss, not of the model -- lives inside it, so its gradient is
averaged over ranks and the optimizer and checkpoint see it. Each objective returns
(loss, logits, the loss's parts as floats for the log); the loop needs nothing else.

- `Objective`: FACET-VLM, L = CE + lambda_cons L_cons (+ lambda_aff L_aff) (+ lambda_au L_au,
  an auxiliary head that reads the action units off the face embedding: a part of the training
  signal, not of the model, so it lives here and evaluation never sees it).
- `ContrastiveObjective`: CLIP pretraining, the symmetric InfoNCE between images and captions.

A batch is a dict (`facet.data.datasets.collate`): "views" (B, T, V, 3, H, W) float in [0, 1],
"label" (B,) int64, "seed" (B,) int64 augmentation seeds, "meta" (B dicts); pretraining
batches (`facet.faces.pretraining.collate_captions`) carry "captions" instead of "meta".
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from facet.augment import mix_view_augment
from facet.losses import LearnedMargin, LossConfig, action_unit_loss, clip_loss, total_loss
from facet.model import CentredCLIP, FacetVLM
from facet.prompts import ClassPrompts
from facet.tokenizer import drop_padding


class Objective(nn.Module):
    """augment -> class prompts -> FacetVLM -> L = CE + lambda_cons L_cons (+ lambda_aff L_aff).

    Args:
        model: the FacetVLM being trained.
        prompts: the class prompts (None with the learned head, `text_head=False`).
        loss: the loss weights; a LearnedMargin is built when lambda_aff > 0.
        augment: mixed view augmentation on; mix_prob: cross-sample view mixing.
        mode: the render mode of the views (how they may be augmented).
        mirror: the views' mirror slots (`facet.augment.mirror_slots`) to mirror half of the
            faces, or None.
        num_aus: A, the action units of the auxiliary loss (batches then carry "aus" (B, A));
            a linear AU head on the face embedding is built when loss.lambda_au > 0.
    """

    def __init__(self, model: FacetVLM, prompts: ClassPrompts | None, loss: LossConfig,
                 augment: bool = True, mix_prob: float = 0.0, mode: str = "normals",
                 mirror: Sequence[int] | None = None, num_aus: int = 0):
        super().__init__()
        self.model, self.prompts, self.loss_config = model, prompts, loss
        self.margin = LearnedMargin() if loss.lambda_aff > 0 else None
        if loss.lambda_au > 0 and num_aus < 1:
            raise ValueError("lambda_au > 0 needs the action units to predict (num_aus >= 1)")
        embed_dim = model.clip.config.embed_dim
        self.au_head = nn.Linear(embed_dim, num_aus) if loss.lambda_au > 0 else None
        self.augment, self.mix_prob, self.mode, self.mirror = augment, mix_prob, mode, mirror
        # a frozen text tower gives the same class embeddings every step: encode them once
        self.text_frozen = prompts is not None and prompts.fixed and model.config.freeze_text
        self._frozen_embeddings = None

    def mean_face(self, views: torch.Tensor) -> torch.Tensor:
        """The model's mean image per view slot at the views' size, (V, 3, H, W): what a view
        slot shows where the augmentation leaves the frame."""
        v, (h, w) = views.shape[2], views.shape[-2:]
        return self.model.resized(self.model.pixel_mean[:v], (h, w))  # (V, 3, H, W)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Returns (loss, logits (B, K), the loss's parts as floats for logging)."""
        views = batch["views"]  # (B, T, V, 3, H, W)
        if self.augment:
            views = mix_view_augment(views, batch["seed"], self.mode, self.mean_face(views),
                                     labels=batch["label"], mix_prob=self.mix_prob,
                                     mirror=self.mirror)
        if self.prompts is None:  # the learned head
            output = self.model(views)
        elif self.text_frozen:
            output = self.model(views, class_embeddings=self.frozen_class_embeddings())
        else:
            tokens = self.prompts.tokens(batch["meta"])  # (K, P, L) or (B, K, P, L)
            output = self.model(views, class_tokens=tokens.to(views.device))
        loss, parts = total_loss(output, batch["label"], self.loss_config, self.margin)
        if self.au_head is not None:
            au = action_unit_loss(self.au_head(output.embedding.float()), batch["aus"])
            loss = loss + self.loss_config.lambda_au * au
            parts["au"] = au.item()
        return loss, output.logits, parts

    @torch.no_grad()
    def frozen_class_embeddings(self) -> torch.Tensor:
        """(K, E) class embeddings of a frozen text tower (no dropout, no batch statistics),
        encoded on the first step only."""
        if self._frozen_embeddings is None:
            tokens = self.prompts.tokens().to(self.model.pixel_mean.device)
            self._frozen_embeddings = self.model.encode_classes(tokens)
        return self._frozen_embeddings


class ContrastiveObjective(nn.Module):
    """One CLIP pretraining step: augment each image, CLIP's symmetric InfoNCE between the
    images and their captions (`facet.losses.clip_loss`). Under DDP each rank contrasts its own
    share of the batch (OpenAI gathers features over all ranks).

    Args: clip: the CLIP being trained, in its `facet.model.CentredCLIP` wrapper; tokenizer;
        augment: mixed view augmentation of every image; mode: the render mode of the images.
    """

    def __init__(self, clip: CentredCLIP, tokenizer, augment: bool = True, mode: str = "normals"):
        super().__init__()
        self.model, self.tokenizer, self.augment, self.mode = clip, tokenizer, augment, mode

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """batch from `facet.faces.pretraining.collate_captions` -> (loss, image-to-text logits
        (B, B), {"scale": the learned temperature's inverse})."""
        views = batch["views"]  # (B, 1, 1, 3, H, W)
        if self.augment:
            views = mix_view_augment(views, batch["seed"], self.mode)
        tokens = drop_padding(self.tokenizer.tokenize(batch["captions"],
                                                      self.model.config.context_length))
        images = views[:, 0, 0]  # (B, 3, H, W) in [0, 1]
        logits_per_image, _ = self.model(images, tokens.to(images.device))
        return clip_loss(logits_per_image), logits_per_image, {"scale": self.model.scale().item()}
