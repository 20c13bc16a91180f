import sys

from robustlearn.cli import main

sys.exit(main())
