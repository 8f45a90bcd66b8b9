"""``galframe bench``'s classical suite as a script: see galframe_bench.classical (``--help`` for the options)."""
import sys

from galframe_bench.classical import main

if __name__ == "__main__":
    sys.exit(main())
