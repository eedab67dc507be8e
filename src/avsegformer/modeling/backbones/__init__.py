"""Visual backbones, each registered by name where it is defined (:mod:`.registry`).

The built-in ones return four feature levels (strides 4, 8, 16, 32): ``res50`` and
``resnet_basic`` (:mod:`.resnet`), ``pvt_v2_b5`` (:mod:`.pvt_v2`).
"""
