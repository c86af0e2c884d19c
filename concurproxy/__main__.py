import sys

from concurproxy.cli import main

sys.exit(main())
