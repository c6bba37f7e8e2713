"""numba threading for the host kernels.

On a machine whose cores are shared with other processes, numba's OpenMP layer spin-waits at its barriers and a
2-thread kernel ran 2-40x slower than single-threaded (FWHT 10.4 vs 4.9 ns/element, CountSketch 0.05 vs 2 GB/s,
measured here); the `workqueue` layer degrades gracefully (3.1 ns/element). So unless the user chose a layer
with NUMBA_THREADING_LAYER, the kernels ask for `workqueue`. This must run before the first parallel kernel.
"""

from __future__ import annotations

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
