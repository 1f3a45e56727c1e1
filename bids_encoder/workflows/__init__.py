"""Pipelines that glue BIDS inputs, the numeric core and BIDS-Derivatives outputs."""
