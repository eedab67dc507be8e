"""Forward-pass benchmark of AVSegFormer: latency, frames/s, peak RSS, FLOPs, efficiency.

Prints JSON. Same as ``avsegformer bench``; see ``avsegformer.commands.bench``.

    python bench/forward.py                        # res50_s4 + pvt2_s4, 224 and 512, fp32 + bf16
    python bench/forward.py --models res50_s4 --sizes 224 --allocator default
"""

from __future__ import annotations

import sys

from avsegformer.commands.bench import main

if __name__ == "__main__":
    sys.exit(main())
