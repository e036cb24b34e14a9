"""A model version as a Python dependency: ``flywheel package`` builds a wheel (booster, feature schema,
record checks and ``predict``) that an application installs like any library."""
