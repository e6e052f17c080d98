"""Reference MCP service for mcpdeploy: RailsPress content over MCP Streamable HTTP."""

__version__ = "1.0.0"
SERVICE_NAME = "railspress-mcp"
