"""What every stage shares: output names and the marker of a finished fit (:mod:`.naming`), the records the
console prints (:mod:`.records`), thresholded group z maps (:mod:`.thresholds`) and signal handling
(:mod:`.interrupts`)."""
