"""The source stage: the Git tip -> the desired state in force.

``source.refresh.DesiredSource`` fetches the tracked branch, validates the tip as a whole and
keeps the last valid commit in force when the tip is rejected or the remote is down;
``source.facts`` is what it records about the source in the store (and what the read model
reports).
"""
