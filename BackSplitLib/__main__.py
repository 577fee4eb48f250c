import sys

from BackSplitLib.cli import main

sys.exit(main())
