"""`python -m mcp_service` runs the command line."""

from mcp_service.cli import main

# The guard matters: uvicorn spawns workers, which re-import the main module.
if __name__ == "__main__":
    raise SystemExit(main())
