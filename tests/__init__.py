"""The test suite, one folder per creditlab package; shared helpers in tests/helpers."""
