"""The ground floor: contracts every layer shares, importing nothing of ours.

Steps, stacks, serving, flows and the CLI all import these modules; they import only the standard library
(and, lazily, NumPy where a contract converts arrays), so no layer reaches into another to learn what a
model's inputs or outputs are.
"""
