"""Helper modules for the tests (imported by test files; not tests themselves)."""
