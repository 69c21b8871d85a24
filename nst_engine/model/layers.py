"""VGG19's architecture as data: its layer names, in the order of torchvision's
``vgg19().features``, and every state-dict key with its shape.

Torch-free on purpose: preset validation (which runs in the plug-in's dialog path) needs the
names, and must not pay for importing torch.
"""

from __future__ import annotations

# Convolution blocks of VGG19: (block number, number of conv layers in it).
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


def _names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in _BLOCKS:
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


#: Every layer of ``vgg19().features``; ``LAYERS[i]`` is ``features[i]``.
LAYERS: tuple[str, ...] = _names()
#: Layer name -> index in ``vgg19().features``.
INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYERS)}
#: The 16 convolutions, in order; these are the only weights the engine keeps.
CONV_LAYERS: tuple[str, ...] = tuple(n for n in LAYERS if n.startswith("conv"))
#: Layers a preset may name for content or style features.
FEATURE_LAYERS: tuple[str, ...] = tuple(n for n in LAYERS if not n.startswith("pool"))

#: VGG19's ``features`` (configuration "E" of Simonyan & Zisserman): output channels of each 3x3
#: convolution (each followed by a ReLU), "M" for a 2x2 max pooling.
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: torchvision's classifier: (state-dict index, in features, out features). The engine never
#: builds it; weight files may carry it, and their shapes are checked.
VGG19_CLASSIFIER = ((0, 512 * 7 * 7, 4096), (3, 4096, 4096), (6, 4096, 1000))


def vgg19_state_shapes() -> dict[str, tuple[int, ...]]:
    """Every key and shape of torchvision's ``vgg19()`` state dict (features and classifier),
    in its order, without building anything."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, 3
    for v in VGG19_CONFIG:
        if v == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (v, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (v,)
        index, channels = index + 2, v
    for i, n_in, n_out in VGG19_CLASSIFIER:
        shapes[f"classifier.{i}.weight"] = (n_out, n_in)
        shapes[f"classifier.{i}.bias"] = (n_out,)
    return shapes
