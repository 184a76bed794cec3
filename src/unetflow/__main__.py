import sys

from unetflow.cli import main

sys.exit(main())
