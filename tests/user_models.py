"""Models a practitioner brings, defined outside the registry; shared by the tests of correct() and fix."""
from __future__ import annotations

from torch import nn


class TinyNet(nn.Module):
    """A user's classifier, not from the registry (REM cannot widen this unregistered container): convolution,
    batch norm, a linear head."""

    def __init__(self, channels: int = 3, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x))
