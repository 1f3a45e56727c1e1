"""Everything BIDS: layout queries, events, stimuli, confounds, loading data and writing derivatives."""
