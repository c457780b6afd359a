"""Named deep architectures as layer specs: ResNet-20/18/34 and VGG-11/16 (spiking, ANN or hybrid).

Every builder returns a list of specs for :class:`brainsnn.engine.network.Network`; the
``kinds`` argument is a kind or a pattern of S/A letters, one per weighted layer in running
order (stem, the two convolutions of every basic block, hidden linear layers, the readout;
projection shortcuts take the kind of their block's last layer and are not counted).
Spiking layers never max-pool: down-sampling is by stride-2 convolutions and 2x2 average
pooling, and the classifier reads a global average pool.
"""
from __future__ import annotations

from brainsnn.engine.network import (BackRes, NetworkError, Residual, kind_list, avgpool, conv,
                                     flatten, linear)

__all__ = ["resnet_specs", "vgg_imagenet_specs", "arch_specs", "ARCHITECTURES", "RESNET_STAGES",
           "VGG_CONFIGS"]

#: basic blocks per stage of the ImageNet ResNets (He et al. 2016, table 1)
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

#: convolution widths ('P' = 2x2 average pooling) of VGG-11 and VGG-16 (Simonyan & Zisserman)
VGG_CONFIGS = {
    11: (64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"),
    16: (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"),
}

#: names accepted by :func:`arch_specs` (and the protocols' ``--arch``)
#: The named networks of :func:`arch_specs`: CIFAR ResNets (6n + 2), ImageNet ResNets, VGGs.
ARCHITECTURES = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet18",
                 "resnet34", "vgg11", "vgg16")


def _stages(depth):
    """Blocks per stage: 3 stages of (depth - 2) / 6 blocks (CIFAR ResNets) or the table."""
    if depth in RESNET_STAGES:
        return RESNET_STAGES[depth]
    if depth >= 8 and (depth - 2) % 6 == 0:
        n = (depth - 2) // 6
        return (n, n, n)
    raise NetworkError(f"ResNet depth {depth!r} unknown; expected 18 or 34 (4 stages) or "
                       "6n + 2 such as 20, 32, 44, 56 (3 stages, CIFAR)")


def resnet_specs(depth=20, width=None, input_size=32, n_classes=10, kinds=None, backres=None,
                 backres_form="reentry", bias=False):
    """A ResNet of basic blocks (two 3x3 convolutions, the shortcut added before the second
    one's neuron or ReLU).

    Parameters
    ----------
    depth : int
        20 (or any 6n + 2: three stages of n blocks, the CIFAR ResNets) or 18 / 34 (four
        stages, :data:`RESNET_STAGES`).
    width : int, optional
        Channels of the first stage (doubled at each later stage); default 16 for the CIFAR
        depths, 64 for 18 / 34.
    input_size : int
        Image side in pixels. Up to 64: the CIFAR stem (one 3x3 convolution, stride 1);
        above: the ImageNet stem (7x7 convolution, stride 2, then 2x2 average pooling in place
        of the 3x3 max-pooling), e.g. 224 -> 56 px at the first stage.
    n_classes : int
    kinds : None, str or list
        None / 'spiking' / 'artificial' or a pattern of S/A letters (stem, 2 per block,
        readout).
    backres : None, int or dict
        BackRes on residual stages: ``{stage: R}`` (stages numbered from 1) runs the
        stage's shape-keeping blocks (all but a first block that down-samples) R times with
        shared weights, as one :class:`BackRes` block; an int R means every stage that has
        shape-keeping blocks (ResNet-8's later stages have none).
    backres_form : {'reentry', 'additive'}
    bias : bool

    The first block of every stage after the first halves the image side with stride 2 and
    takes a 1x1 stride-2 projection shortcut; the other blocks have identity shortcuts.
    The readout is a linear layer on the global average pool.
    """
    depth = int(depth)
    stages = _stages(depth)
    input_size = int(input_size)
    imagenet = input_size > 64
    width = int(width or (64 if depth in RESNET_STAGES else 16))
    if width < 1:
        raise NetworkError(f"ResNet width must be >= 1, got {width}")
    side = input_size // 4 if imagenet else input_size
    final = side // 2 ** (len(stages) - 1)
    if final < 1 or final * 2 ** (len(stages) - 1) * (4 if imagenet else 1) != input_size:
        raise NetworkError(f"ResNet-{depth}: input size {input_size} px does not halve evenly "
                           f"{len(stages) - 1 + (2 if imagenet else 0)} times; use e.g. 32 or 224")
    every_stage = backres is not None and not isinstance(backres, dict)
    if backres is None:
        backres = {}
    elif every_stage:
        R = int(backres)
        backres = {s: R for s in range(1, len(stages) + 1) if stages[s - 1] > (1 if s > 1 else 0)}
        if R > 1 and not backres:
            raise NetworkError(f"ResNet-{depth} has no shape-keeping block for BackRes")
    unknown = sorted(set(backres) - set(range(1, len(stages) + 1)))
    if unknown:
        raise NetworkError(f"backres names stages {unknown}; ResNet-{depth} has stages "
                           f"1..{len(stages)}")
    n_weighted = 1 + 2 * sum(stages) + 1
    kind = iter(kind_list(kinds, n_weighted, "spiking"))
    if imagenet:
        specs = [conv(width, next(kind), 7, 2, 3, bias=bias, name="stem"),
                 avgpool(2, name="stem_pool")]
    else:
        specs = [conv(width, next(kind), 3, bias=bias, name="stem")]
    channels = width
    for i, n_blocks in enumerate(stages, start=1):
        out = width * 2 ** (i - 1)
        blocks = []
        for j in range(1, n_blocks + 1):
            stride = 2 if (i > 1 and j == 1) else 1
            name = f"s{i}b{j}"
            shortcut = None
            if stride != 1 or channels != out:
                shortcut = conv(out, kernel_size=1, stride=stride, padding=0, bias=bias,
                                name=f"{name}_shortcut")
            blocks.append(Residual((conv(out, next(kind), 3, stride, bias=bias, name=f"{name}c1"),
                                    conv(out, next(kind), 3, bias=bias, name=f"{name}c2")),
                                   name=name, shortcut=shortcut))
            channels = out
        R = int(backres.get(i, 1))
        if R > 1:
            keep = 1 if blocks[0].shortcut is not None else 0
            if keep == len(blocks):
                raise NetworkError(f"stage {i} of ResNet-{depth} has no shape-keeping block "
                                   "for BackRes")
            specs += blocks[:keep]
            specs.append(BackRes(tuple(blocks[keep:]), R=R, form=backres_form,
                                 name=f"s{i}_backres"))
        else:
            specs += blocks
    specs += [avgpool(final, name="gap"), flatten(),
              linear(int(n_classes), next(kind), bias=bias, name="output")]
    return specs


def vgg_imagenet_specs(depth=16, n_classes=1000, fc=(4096, 4096), width=64, kinds=None,
                       bias=False):
    """VGG-11 / VGG-16 for 224 px images: :data:`VGG_CONFIGS` with 2x2 average pooling in
    place of max-pooling, then the ``fc`` hidden layers and the readout.

    ``width`` scales the convolutions (64 = the original; 16 gives a network a quarter as
    wide). ``kinds``: as in :func:`brainsnn.engine.network.vgg_specs`.
    """
    from brainsnn.engine.network import vgg_specs

    if int(depth) not in VGG_CONFIGS:
        raise NetworkError(f"VGG depth {depth!r} unknown; expected 11 or 16")
    if int(width) < 1:
        raise NetworkError(f"VGG width must be >= 1, got {width}")
    factor = int(width) / 64
    channels = tuple(c if c == "P" else max(1, round(c * factor)) for c in VGG_CONFIGS[int(depth)])
    return vgg_specs(channels, fc=tuple(fc), n_classes=n_classes, kinds=kinds, bias=bias)


def arch_specs(name, n_classes=10, input_size=32, width=None, kinds=None, backres=None):
    """Specs of a named architecture (:data:`ARCHITECTURES`), e.g. ``arch_specs('resnet20')``.

    ``width``: the first stage's channels (ResNet) or the first convolution's (VGG, 64 =
    the original); ``backres`` as in :func:`resnet_specs` (ResNets only).
    """
    if name not in ARCHITECTURES:
        raise NetworkError(f"architecture {name!r} unknown; expected one of "
                           f"{', '.join(ARCHITECTURES)}")
    if name.startswith("resnet"):
        return resnet_specs(int(name[len("resnet"):]), width=width, input_size=input_size,
                            n_classes=n_classes, kinds=kinds, backres=backres)
    if backres:
        raise NetworkError(f"backres applies to the residual stages of a ResNet, not to {name}")
    fc = (4096, 4096) if input_size > 64 else (512,)
    return vgg_imagenet_specs(int(name[len("vgg"):]), n_classes=n_classes, fc=fc,
                              width=width or 64, kinds=kinds)
