"""The job controller: Flask app (HTTP API and web page), database, auth, admin CLI."""


def create_app(settings=None):
    from jobqueue.controller.app import create_app as _create_app

    return _create_app(settings)
