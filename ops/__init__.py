"""Operating the platform from outside it: the production admin CLI (`emailplatform-admin`) and the
HTTP API client that runbooks, the demo and the tests use. Never imports the embedded stack."""
