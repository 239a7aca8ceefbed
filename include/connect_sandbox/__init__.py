"""A local stand-in for the CloudBlue Connect public API, for tests, demos and benchmarks.

It is an independent reading of Connect's OpenAPI spec and API notes (it never imports the
provider): ``connect-sandbox`` serves ``/public/v1`` with the demo API key
``ApiKey SU-000-000-000:sandbox-demo-key`` and an admin API under ``/_sandbox``.

The three constants live here, in a module with no imports, so that the server (``app``) and the
launcher its clients use (``testing``) share them without the launcher importing FastAPI.
"""

API_PREFIX = "/public/v1"
ADMIN_PREFIX = "/_sandbox"
DEMO_API_KEY = "ApiKey SU-000-000-000:sandbox-demo-key"
