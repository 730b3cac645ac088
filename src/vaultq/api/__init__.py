"""vaultq's HTTP API (FastAPI): routers, authentication and authorisation, problem details."""
