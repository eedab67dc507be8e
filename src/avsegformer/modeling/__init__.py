"""The AVSegFormer network: ``nn.Module`` parts and their builders.

No file I/O, no device or dtype hard-coding: everything follows the inputs. Build a
network with :func:`avsegformer.modeling.build.build_model`; ``avsegformer.build_model``
(:mod:`avsegformer.pretrained`) also loads weights, read by :mod:`avsegformer.checkpoint`.

# References: AVSegFormer (Gao et al., arXiv 2307.01146).
"""
