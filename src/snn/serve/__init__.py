"""`snn serve`: a local web application over the run folders.

    runs.py      the run folders under --runs: names, statuses, files read safely
    machine.py   the state machine drawn from its definition (boxes, containers, arrows)
    views.py     what the pages show: a run, its neurons, a prediction, a run's progress
    app.py       the Starlette application: pages, JSON API, event stream, security headers
    pages/       the four pages (static HTML)
    static/      their scripts (charts and the state machine in plain SVG) and style sheet

Started by `snn.commands.serve` on uvicorn; docs/serve.md describes the pages and the API.
"""
