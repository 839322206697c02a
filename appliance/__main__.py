"""``python3 -m appliance`` is the kvod CLI."""
import sys

from appliance.cli import main

sys.exit(main())
