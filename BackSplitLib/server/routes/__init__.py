"""The API's routes, one module per resource; ``create_app`` (``server/app.py``) includes their routers."""
