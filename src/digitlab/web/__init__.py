"""The draw-a-digit page and the HTTP prediction API (the ``web`` extra).

``digitlab serve MODEL`` builds the app with :func:`digitlab.web.app.create_app`
and runs it with :func:`digitlab.web.server.run`. Nothing here is imported by
the command line until ``serve`` runs, so other commands start without
FastAPI (and work without the extra installed).
"""

# The largest request body the API reads, by default (`digitlab serve --max-body-bytes`).
MAX_BODY_BYTES = 2_000_000
