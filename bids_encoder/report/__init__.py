"""HTML reports: one page per participant (``OUTPUT_DIR/sub-X.html``) and one for the group (``group.html``)."""
