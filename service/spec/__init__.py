"""What a job is, typed: the request bodies clients send, and the JobSpec every item of a job shares.

Below the job runner and the backends (both take a JobSpec), above convert and pipeline."""
