"""The AVSegFormer network: ``nn.Module`` parts and their builders.

No file I/O, no device or dtype hard-coding: everything follows the inputs. Build a
model with :func:`avsegformer.modeling.build.build_model` (re-exported as
``avsegformer.build_model``); load weights with :mod:`avsegformer.checkpoint`.

# References: AVSegFormer (Gao et al., arXiv 2307.01146).
"""
