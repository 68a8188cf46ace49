"""Simulated providers: a local server speaking the Groq and Cerebras wire formats."""
