"""Test helpers for plugin authors: fixtures and contract suites (see ``facerep.testing.plugin``)."""
