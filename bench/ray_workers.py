"""Jobs per minute with the Ray backend on a two-node Ray cluster started on this machine's loopback.

    python bench/ray_workers.py [bench/workers.py's options: --jobs 8 --steps 10 ...]

Starts the cluster the tests use (``tests/ray_cluster.py``: two nodes, one ``i2v_slot`` each, in a
private temp folder), runs ``bench/workers.py --backend ray`` against it with two actors placed by
that resource (so the table has 1 and 2 local workers and the 2 actors, with the ratios), and stops
every Ray process it started, whatever happens. Nothing is fetched from a model hub (HF_HUB_OFFLINE).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ray_cluster import RayCluster  # noqa: E402


def main() -> int:
    cluster = RayCluster(nodes=2, resources={"i2v_slot": 1}).start()
    try:
        return subprocess.run([sys.executable, str(ROOT / "bench" / "workers.py"), "--backend", "ray",
                               "--ray-address", cluster.address, "--ray-resource", "i2v_slot", "--actors", "2",
                               *sys.argv[1:]], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
    finally:
        left = cluster.stop()
        print(f"Ray cluster stopped; processes left: {len(left)}")


if __name__ == "__main__":
    sys.exit(main())
