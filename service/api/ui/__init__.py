"""The job page's static files (``GET /ui``): one HTML page, its script and its style sheet, and the login form."""
