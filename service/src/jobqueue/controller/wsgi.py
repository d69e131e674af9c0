"""The module Apache mod_wsgi loads: `WSGIScriptAlias / .../jobqueue/controller/wsgi.py`
or `WSGIImportScript`; settings come from /etc/jobqueue/controller.toml (JOBQUEUE_CONFIG)."""

from jobqueue.controller.app import create_app

application = create_app()
