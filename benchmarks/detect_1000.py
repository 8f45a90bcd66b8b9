"""``galframe bench``'s detect suite as a script: see galframe_bench.detect (``--help`` for the options)."""
import sys

from galframe_bench.detect import main

if __name__ == "__main__":
    sys.exit(main())
