"""Protocol simulators on 127.0.0.1: an XDS.b registry/repository, SMTP, an operator API, MLLP.

They serve the tests, ``crbio simulate`` and conformity runs; see :mod:`crbio.simulators.run`.
"""
