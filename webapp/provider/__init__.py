"""The SMS wire: the MultiTEL client, segment and cost math, the sandbox, the delivery-report parser.

Nothing here knows Flask or the database, so it can be tested and benchmarked on its own.
"""
