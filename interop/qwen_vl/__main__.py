import sys

from jaxmodels_interop.qwen_vl.cli import main

sys.exit(main())
