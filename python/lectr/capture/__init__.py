"""Getting every record to the store: the hand-over to the writer process, the
writer, its spill."""
