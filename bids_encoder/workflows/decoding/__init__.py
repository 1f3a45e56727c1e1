"""``--decode``: single-trial responses, the tuning model and the noise covariance trained on the other runs,
the posterior of every held-out trial's stimulus (:mod:`.decode`), and the decoding tables (:mod:`.outputs`)."""
