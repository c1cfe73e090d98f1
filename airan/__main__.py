import sys

from airan.cli import main

sys.exit(main())
