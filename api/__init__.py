"""The job service: FastAPI app, job store and launchers (built on the tuner)."""
