"""Work arriving from outside, turned into jobs: upload webhooks and the Label Studio sweep.

Upload webhooks (Label Studio, S3/MinIO, V7 and a generic HMAC-signed sender) turn uploads into jobs.
Every webhook reads the raw body under a cap (413 before any secret or HMAC work), authenticates with its
own per-sender secret (never the API bearer token: senders cannot send one), dedupes through the job store's
idempotency key, enqueues, and answers 202 with the job ids. Nothing slow runs on the request path: Label
Studio gives a receiver 1 s and never retries. A webhook whose secret is not configured answers 404, as if
the route did not exist.
"""
