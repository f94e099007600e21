"""The dashboard's Jinja2 pages and partials, shipped as package data of the web layer."""
