"""The user-facing entry: `partir.partition`, the `Partitioned` call path and multi-host runs."""
