"""ANN benchmark: Aftershock vs pyseismic-lsr vs exact (same as `aftershock bench ann ...`).

    python benchmarks/ann.py --docs D.npz --queries Q.npz --dataset NAME [--help for all options]
"""

import sys

from aftershock.eval.ann import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
