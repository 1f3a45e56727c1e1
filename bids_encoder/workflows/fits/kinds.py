"""The ``--model`` choices and the inputs each reads (no imports: the command line checks names before
TensorFlow loads)."""

#: --model choice → the inputs it reads: 'glm' (events), 'prf2d' (stimulus apertures), 'tuning' (stimulus values),
#: 'singletrial' (events, one response per event: bids_encoder.workflows.single_trial)
MODEL_KINDS = {"glm": "glm", "prf2d": "prf2d", "dog2d": "prf2d", "css2d": "prf2d", "dn2d": "prf2d",
               "gauss1d": "tuning", "loggauss1d": "tuning", "vonmises1d": "tuning", "singletrial": "singletrial"}

#: --single-trial-stages: GLMsingle's three stages (library HRF, noise components, fractional ridge)
SINGLE_TRIAL_STAGES = ("hrf", "denoise", "ridge")
MODELS = tuple(MODEL_KINDS)


#: --hrf values that fit one model (``auto`` chooses among them by cross-validation)
HRF_CHOICES = ("canonical", "shared", "fit")
