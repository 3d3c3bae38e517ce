import sys

from hvq.cli import main

sys.exit(main())
