"""``python3 -m appliance`` is the kvod CLI."""
import sys

from appliance.cli.main import main

sys.exit(main())
