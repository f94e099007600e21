"""The dashboard's CSS, icon and vendored htmx, shipped as package data of the web layer."""
