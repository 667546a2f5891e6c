"""Pure inference: detectors, runtimes and box ops.

Nothing here imports ``service``, FastAPI or pydantic-settings; torch is imported lazily and only
by the detectors that need it, so importing ``models`` stays cheap.
"""
