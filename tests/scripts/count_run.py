"""A run that processes N items slowly; used by the kill-and-resume test as a real subprocess."""

import sys
import time

from harness.store import Run, run_pending

root, n_items, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
run = Run(root, "count", config={"n_items": n_items})


def compute(batch: list[int]) -> list[dict]:
    time.sleep(delay)
    return [{"item": i, "square": i * i} for i in batch]


run_pending(run.results, list(range(n_items)), key=lambda i: f"item-{i}", compute=compute, batch_size=1)
print("finished", len(run.results))
