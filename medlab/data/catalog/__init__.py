"""One module per dataset, each registering its entry (:func:`medlab.data.registry.register`) when the
registry first needs it. A new dataset is a new file here: the chapters that do not declare it keep
their fingerprints (:mod:`medlab.dependencies`), so adding a chapter re-executes no other chapter."""
