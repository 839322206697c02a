"""Fuzz targets for kvod's untrusted-input parsers and the sans-IO RTSP
server, and the runner behind ``make fuzz`` (``python3 -m tests.fuzz.run``).
tests/test_fuzz.py runs every target for a test-sized count."""
