"""The prediction service: FastAPI app factory, model holder with hot swap, schemas, profiling, auth."""
