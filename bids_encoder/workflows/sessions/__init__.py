"""A subject's fixed effects over its finished sessions, written without ``ses`` (:mod:`.fixed_effects`)."""
