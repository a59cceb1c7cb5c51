"""The formats an auditor reproduces, as pure code: no database driver, no AWS SDK.

Everything here can be installed and run alone (`pip install auditchain` without extras) so
that `verify-bundle` and `verify-proof` need nothing but the files they are given and a key.
"""
