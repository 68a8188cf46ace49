"""Provider clients (Groq, Cerebras, OpenAI-compatible) and their rate-limit header readers."""
