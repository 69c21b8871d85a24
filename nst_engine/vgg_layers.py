"""VGG19's layer names, in the order of torchvision's ``vgg19().features``.

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
