"""The client half of the ``foldserve`` command: talk to a running server over HTTP.

``foldserve upload | jobs | list | predict | compare | delete | download``, each with
``--url`` (``FOLDSERVE_URL``), ``--token`` (``FOLDSERVE_TOKEN``) and ``--json``. Tables and
the upload's stage progress are drawn with rich; ``--json`` prints the server's answer
as it came, for scripts. Exit codes (``EXIT_*``) say what went wrong without reading the
text.

    parser.py    the commands' arguments -> a run_* function per command (commands.py)
    commands.py  run_upload / run_jobs / ... : rows in (rows.py), a request out (http.py),
                 the answer printed (output.py)
    http.py      the connection, ClientError and the exit codes, the default URL
    rows.py      rows from --data JSON or a .json / .npy / .npz file, as a request body
    output.py    tables, --json, the fold report's summary, the stage progress
"""

from service.client.commands import (
    ACCEPTED,
    ARTIFACTS,
    pack_saved_model,
    run_compare,
    run_delete,
    run_download,
    run_jobs,
    run_list,
    run_predict,
    run_upload,
    watch,
)
from service.client.http import *  # noqa: F403 - the exit codes, Client, ClientError, ...
from service.client.http import __all__ as _http_names
from service.client.parser import add_client_commands, client_command
from service.client.rows import JSON_HEADERS, json_content, load_rows, request_body

__all__ = [
    *_http_names,
    "ACCEPTED",
    "ARTIFACTS",
    "JSON_HEADERS",
    "add_client_commands",
    "client_command",
    "json_content",
    "load_rows",
    "pack_saved_model",
    "request_body",
    "run_compare",
    "run_delete",
    "run_download",
    "run_jobs",
    "run_list",
    "run_predict",
    "run_upload",
    "watch",
]
