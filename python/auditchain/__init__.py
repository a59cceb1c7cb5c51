"""auditchain: the Python shims around a tamper-evident audit log that lives in PostgreSQL.

The database owns every rule (hashing, immutability, drain, verification, job states);
this package only does what a database cannot: S3 uploads, metric publishing, export
streaming, offline verification, the migration runner and the command line.
"""

__version__ = "0.1.0"
