import sys

from interop.qwen_vl.cli import main

sys.exit(main())
