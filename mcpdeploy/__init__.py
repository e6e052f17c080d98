"""mcpdeploy: provision, deploy, verify, switch and maintain a production MCP service."""

__version__ = "0.1.0"
