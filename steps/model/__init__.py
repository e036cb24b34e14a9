"""Model steps: tune, train, evaluate, explain, register, promote."""
