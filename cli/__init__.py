"""`uk-law`: a command-line client for the dataset server.

It talks to the server only over HTTP (the REST API and the batch event stream) and imports none of
the server's packages, so it can run on any machine that reaches the server.
"""
