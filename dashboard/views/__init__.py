"""Page and JSON handlers, one module per area; the route table lives in dashboard/app.py."""
