"""Getting labelled images into the catalog and datasets out of it."""
