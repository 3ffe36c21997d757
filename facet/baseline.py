"""The reference row FACET-VLM has to beat: a plain CNN, trained from scratch on the same views.

Not part of FACET-VLM; our addition, so that every table can answer "is the vision-language
model earning its parts?". `python train.py --preset=cnn-baseline` trains it through the same
splits, view cache, augmentation, optimizer, schedule, loop and reports as FACET-VLM, so the
two rows differ in the model alone: no CLIP, no pretraining, no prompts, no fusion.

The model (`ViewsCNN`):
- the V views of a frame stacked as one image of 3V channels (the views come from different
  cameras, so their pixels do not line up; but every first-layer filter has its own weights
  for each view's channels, so it can read one view alone as well as combine them);
- standardised like a from-scratch FacetVLM: minus the training set's mean rendering per view,
  divided by one pixel std (`facet.data.datasets.view_statistics`);
- five blocks conv 3x3 -> BatchNorm -> ReLU -> max-pool 2 (64 px -> 2 px), a global average,
  dropout and a linear layer over the K classes;
- a clip of T frames: every frame classified, the logits averaged over frames.

`BaselineObjective` is its training step, the same contract as `facet.objective.Objective`:
batch -> (loss, logits, the loss's parts): mixed view augmentation, then cross-entropy.

Shapes: B batch, T frames, V views, K classes, C channels, H = W pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from facet.augment import mix_view_augment

CNN_MODEL = "cnn"  # its name for --model (beside the CLIP presets)
CNN_WIDTHS = (32, 64, 128, 256, 256)  # channels of the five blocks, each halving H and W


@dataclass
class BaselineOutput:
    """What `facet.loop.evaluate` reads of a model's output (FacetOutput's `logits`; the views
    are channels of one image, so there are no view weights to report)."""

    logits: torch.Tensor  # (B, K)


class ViewsCNN(nn.Module):
    """Stacked views -> five conv blocks -> class logits (module docstring).

    Args:
        views: V, the views per frame.
        num_classes: K.
        image_size: H = W of the views.
        widths: the blocks' output channels.
        dropout: before the linear layer.
    """

    def __init__(self, views: int, num_classes: int, image_size: int,
                 widths: tuple[int, ...] = CNN_WIDTHS, dropout: float = 0.3):
        super().__init__()
        if image_size % 2 ** len(widths):
            raise ValueError(f"image_size {image_size} is not a multiple of "
                             f"{2 ** len(widths)}: the {len(widths)} blocks halve it each")
        blocks, channels = [], 3 * views
        for width in widths:
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False),  # BN adds the bias
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        # input standardisation, as FacetVLM's: set from the training set before training
        self.register_buffer("pixel_mean", torch.full((views, 3, image_size, image_size), 0.5))
        self.register_buffer("pixel_std", torch.ones(()))

    def set_input_statistics(self, mean: torch.Tensor, std: float) -> None:
        """The training set's mean rendering (V, 3, H, W) in [0, 1] and its pixel std."""
        if mean.shape != self.pixel_mean.shape:
            raise ValueError(f"mean rendering {tuple(mean.shape)}, the model reads "
                             f"{tuple(self.pixel_mean.shape)}")
        self.pixel_mean.copy_(mean)
        self.pixel_std.fill_(max(float(std), 1e-3))  # a constant image has std 0

    def forward(self, views: torch.Tensor) -> BaselineOutput:
        """views: (B, T, V, 3, H, W) float in [0, 1] -> BaselineOutput."""
        b, t, v, c, h, w = views.shape
        x = (views - self.pixel_mean) / self.pixel_std  # (B, T, V, 3, H, W)
        x = x.reshape(b * t, v * c, h, w)  # (B*T, 3V, H, W): the views as channels
        x = self.features(x).mean(dim=(2, 3))  # (B*T, C) global average over the last grid
        logits = self.classifier(self.dropout(x)).reshape(b, t, -1).mean(dim=1)  # (B, K)
        return BaselineOutput(logits=logits)


class BaselineObjective(nn.Module):
    """One training step of the baseline: augment -> ViewsCNN -> cross-entropy.

    Args:
        model: the ViewsCNN.
        augment: mixed view augmentation on (as FACET-VLM's, `facet.augment`);
            mix_prob: cross-sample view mixing.
        mode: the render mode of the views (how they may be augmented).
        label_smoothing: of the cross-entropy. mirror: mirror slots, as FACET-VLM's.
    """

    def __init__(self, model: ViewsCNN, augment: bool = True, mix_prob: float = 0.0,
                 mode: str = "normals", label_smoothing: float = 0.0,
                 mirror: Sequence[int] | None = None):
        super().__init__()
        self.model, self.augment, self.mix_prob, self.mirror = model, augment, mix_prob, mirror
        self.mode, self.label_smoothing = mode, label_smoothing

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Returns (loss, logits (B, K), {"ce": the loss as a float})."""
        views = batch["views"]  # (B, T, V, 3, H, W)
        if self.augment:  # the warp pads with the mean face, as FACET-VLM's does
            views = mix_view_augment(views, batch["seed"], self.mode, self.model.pixel_mean,
                                     labels=batch["label"], mix_prob=self.mix_prob,
                                     mirror=self.mirror)
        logits = self.model(views).logits
        loss = F.cross_entropy(logits.float(), batch["label"],
                               label_smoothing=self.label_smoothing)
        return loss, logits, {"ce": loss.item()}
