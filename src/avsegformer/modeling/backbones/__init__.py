"""Visual backbones returning four feature levels (strides 4, 8, 16, 32)."""
