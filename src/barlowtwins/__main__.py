import sys

from barlowtwins.cli import main

sys.exit(main())
