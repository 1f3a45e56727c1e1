"""Examples: ``python -m bids_encoder.example`` runs the BIDS-App end to end on a generated whole-brain dataset
(:mod:`.whole_brain`); ``python -m bids_encoder.example.demo`` fits simulated data through the library
(:mod:`.demo`)."""
