"""Offline verifiers built on auditchain.formats: export bundles and proof receipts.

Nothing here opens a database connection; S3 is imported only when a bundle is read from s3://.
"""
