"""MCP server tests (a package, so its conftest does not clash with other test folders collected in the same run)."""
