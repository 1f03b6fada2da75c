"""CARAFE upsampling (content-aware reassembly of features), a baseline of NRD Table 3.

Wang et al., "CARAFE: Content-Aware ReAssembly of FEatures" (ICCV 2019), section 3: a kernel
prediction module (channel compressor 1x1, content encoder k_enc x k_enc to σ² k_up² channels,
pixel shuffle, softmax over each k_up x k_up kernel) predicts one reassembly kernel per output
location; the output at ``l'`` is the kernel-weighted sum of the k_up x k_up input neighbourhood
around its source location ``l = floor(l' / σ)`` (CARAFE eq. 2-4).

Reassembly is evaluated without per-pixel loops: the input is unfolded once at its own resolution
``(B, C, k_up², h, w)`` and contracted with the kernels arranged as ``(B, k_up², h, σ, w, σ)``, so
the neighbourhoods are never copied per output pixel. Its cost (``C k_up²`` fused multiply-adds per
output element) is reported by :meth:`Reassemble.flops`, which forward hooks cannot see.

Choices where the papers are silent: the head reduces the stride-32 features to ``channels`` (256)
with a 1x1 conv - BN - ReLU, upsamples them with CARAFE x2 stages down to ``out_stride`` (4),
classifies with a 1x1 convolution and upsamples the scores bilinearly to the image, i.e. the same
output resolution and final x4 bilinear step as NRD. CARAFE hyper-parameters are the paper's
defaults (compressed 64 channels, k_enc = 3, k_up = 5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanseg.nn.backbones.base import FeatureInfo, feature_at
from leanseg.nn.heads.base import DenseHead
from leanseg.nn.layers import NormLayer, conv_bn_relu
from leanseg.structures.labels import IGNORE_INDEX


class Reassemble(nn.Module):
    """Content-aware reassembly (CARAFE eq. 4) given normalised kernels; no parameters.

    Args:
        scale: σ, the upsampling factor.
        kernel_size: k_up, the reassembly neighbourhood.
    """

    def __init__(self, scale: int, kernel_size: int) -> None:
        super().__init__()
        self.scale = scale
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, kernels: Tensor) -> Tensor:
        """``x (B, C, h, w)``, ``kernels (B, k², σh, σw)`` -> ``(B, C, σh, σw)``."""
        batch, channels, h, w = x.shape
        k, s = self.kernel_size, self.scale
        neighbours = F.unfold(x, k, padding=k // 2).view(batch, channels, k * k, h, w)
        kernels = kernels.view(batch, k * k, h, s, w, s)
        out = torch.einsum("bckhw,bkhiwj->bchiwj", neighbours, kernels)  # (B, C, h, σ, w, σ)
        return out.reshape(batch, channels, h * s, w * s)

    def flops(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """``C k_up²`` fused multiply-adds per output element."""
        return output.numel() * self.kernel_size**2


class CARAFE(nn.Module):
    """One CARAFE upsampler: kernel prediction + reassembly (CARAFE Fig. 2).

    Args:
        channels: C, channels of the features to upsample.
        scale: σ, the upsampling factor.
        compressed_channels: C_m of the channel compressor.
        encoder_kernel: k_enc of the content encoder.
        up_kernel: k_up of the reassembly kernels.
    """

    def __init__(
        self,
        channels: int,
        scale: int = 2,
        compressed_channels: int = 64,
        encoder_kernel: int = 3,
        up_kernel: int = 5,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.encoder = nn.Conv2d(
            compressed_channels,
            scale**2 * up_kernel**2,
            encoder_kernel,
            padding=encoder_kernel // 2,
        )
        self.reassemble = Reassemble(scale, up_kernel)

    def forward(self, x: Tensor) -> Tensor:
        kernels = self.encoder(self.compressor(x))  # (B, σ² k², h, w)
        kernels = F.pixel_shuffle(kernels, self.scale)  # (B, k², σh, σw)
        kernels = kernels.softmax(dim=1)
        return self.reassemble(x, kernels)


class CARAFEHead(DenseHead):
    """1x1 reduction, CARAFE x2 stages to ``out_stride``, 1x1 classifier, bilinear.

    Args:
        feature_info: what the backbone (or context module) returns.
        num_classes: number of output classes.
        ignore_index: label value excluded from the loss.
        in_stride: stride of the features to upsample; ``None`` takes the coarsest.
        out_stride: stride after the last CARAFE stage (a power-of-two divisor of in_stride).
        channels: width of the upsampled features.
        compressed_channels: CARAFE channel compressor width.
        up_kernel: CARAFE reassembly kernel size.
        norm_layer: normalisation layer factory.
    """

    onnx_unexportable = None
    predicts_instances = False

    def __init__(
        self,
        *,
        feature_info: list[FeatureInfo],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        in_stride: int | None = None,
        out_stride: int = 4,
        channels: int = 256,
        compressed_channels: int = 64,
        up_kernel: int = 5,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        info = feature_at(feature_info, in_stride)
        self.in_stride = info.stride
        num_stages = math.log2(self.in_stride / out_stride)
        if num_stages < 0 or num_stages != int(num_stages):
            raise ValueError("in_stride / out_stride must be a power of two >= 1")
        self.ignore_index = ignore_index
        self.reduce = conv_bn_relu(info.channels, channels, 1, norm_layer)
        self.upsample = nn.Sequential(
            *(
                CARAFE(channels, 2, compressed_channels, up_kernel=up_kernel)
                for _ in range(int(num_stages))
            )
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def coarse_scores(self, features: dict[int, Tensor]) -> Tensor:
        x = self.upsample(self.reduce(features[self.in_stride]))  # (B, channels, H/4, W/4)
        return self.classifier(x)
