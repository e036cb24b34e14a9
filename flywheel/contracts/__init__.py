"""The ground floor: contracts every layer shares, importing nothing of ours.

Steps, stacks, serving, flows and the CLI all import these modules; they import nothing of ours outside
this package (only libraries: pydantic and YAML for the problem spec, pandas for its rule language, NumPy
lazily where a contract converts arrays), so no layer reaches into another to learn what a problem is,
what a model's inputs and outputs are, where the store keeps what, or what an event is called.
"""
