import os

# Tests never touch a model hub: without this, a hub lookup hangs ~50 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Tiny models run fastest single-threaded; two threads on tiny ops can be 30x slower.
torch.set_num_threads(1)
