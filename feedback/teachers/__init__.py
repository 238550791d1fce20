"""Teachers: models that label images which carry no boxes of their own (generated or captured).

The port and the champion teacher in `port`; the open-vocabulary one (GroundingDINO + SAM) in `grounding_dino`.
"""
